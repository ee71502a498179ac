"""Training health: is the model able to learn, or has it collapsed? Probes on a fixed batch, logged while training.

Legend: B batch (videos), T time, K slots, D width, M tokens (or pixels) a slot attends to.

A collapsed model does not get better with more steps, so these are measured every `log_every` steps on the same
probe batch (the first `PROBE_VIDEOS` validation videos) and written to metrics.jsonl / TensorBoard (split
"health"), summarised in eval.json and plotted by `slotssm viz`:

    slot_cosine          mean cosine similarity over the pairs of slots of one step (B, T averaged). Near 1: the
                         slots are copies of one another (they started identical, or collapsed).
    slot_sensitivity     spread of the slots across videos / their total spread (see `input_sensitivity`). Near 0:
                         the slots do not depend on the input.
    pred_sensitivity     the same for the task's prediction (frames, logits). Near 0: a constant prediction (the
                         mean image, the label prior), whatever the input.
    encoder_entropy      entropy of the encoder's slot attention over the axis it is normalised on, divided by its
    decoder_entropy      maximum (log of that axis' size): 1 = uniform (it reads everything alike), 0 = one-hot.
    grad_norm/<module>   gradient norm of each top-level module (encoder, seq, head, ...) at the log step: does the
                         loss reach the encoder?

Flags (1.0 / 0.0): `collapsed_slots` (slot_cosine > COLLAPSE_COSINE) and `constant_predictions`
(pred_sensitivity < CONSTANT_SENSITIVITY). After warm-up the trainer prints a warning when either is raised.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # only torch at import time: benchmarks/starts.py loads this file beside older versions
    from slotssm.tasks.base import ProbeOutput

__all__ = ["slot_cosine", "input_sensitivity", "attention_entropy", "grad_norms", "probe_metrics",
           "measure", "warnings_for", "summarise"]

PROBE_VIDEOS = 8
COLLAPSE_COSINE = 0.95
CONSTANT_SENSITIVITY = 1e-3  # a mean-image or label-prior answer measures ~1e-6; a fresh model on random tokens ~1e-2


def slot_cosine(slots: Tensor) -> float:
    """Mean pairwise cosine similarity of the K slots of each step: slots (B, T, K, D) -> float in [-1, 1].

    NaN for K = 1 (no pairs).
    """
    if slots.dim() != 4:
        raise ValueError(f"slots: expected shape (B, T, K, D), got {tuple(slots.shape)}")
    k = slots.shape[2]
    if k < 2:
        return float("nan")
    s = nn.functional.normalize(slots.detach().double(), dim=-1)
    sim = s @ s.transpose(-1, -2)  # (B, T, K, K)
    off = sim.sum(dim=(-1, -2)) - sim.diagonal(dim1=-2, dim2=-1).sum(-1)  # sum over k != l
    return float((off / (k * (k - 1))).mean())


def input_sensitivity(x: Tensor) -> float:
    """How much `x` (B, ...) depends on which video it came from: mean over entries of the variance across the B
    videos, divided by the variance of all entries together. In [0, ~1]: 0 when every video gives the same `x`
    (input ignored), near 1 when all of its variation is from video to video. NaN for B < 2 or a constant `x`.
    """
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"x: expected shape (B, ...) with B >= 2 videos, got {tuple(x.shape)}")
    x = x.detach().double().reshape(x.shape[0], -1)
    total = x.var(unbiased=False)
    if total <= 1e-24:
        return float("nan")
    return float(x.var(dim=0, unbiased=False).mean() / total)


def attention_entropy(attn: Tensor, slot_axis: int) -> float:
    """Normalised entropy of attention maps: 1 = uniform, 0 = one-hot.

    attn holds non-negative weights with the slots on `slot_axis` and the inputs on the last axis (e.g. (B, T, K, M)
    with slot_axis=-2), or the slots last. The axis that is normalised is found from the data: the one whose sums
    are closest to 1 (standard attention sums to 1 over the inputs, inverted attention and alpha masks over the
    slots). The weights are renormalised along it (RIM's rows leave weight on a null input) before the entropy.
    """
    a = attn.detach().double().clamp_min(0)
    axis = min((slot_axis % a.dim(), a.dim() - 1), key=lambda d: float((a.sum(d) - 1).abs().mean()))
    n = a.shape[axis]
    if n < 2:
        return float("nan")
    p = a / a.sum(axis, keepdim=True).clamp_min(1e-12)
    ent = -(p * p.clamp_min(1e-12).log()).sum(axis)
    return float(ent.mean() / math.log(n))


def grad_norms(model: nn.Module) -> dict[str, float]:
    """Gradient norm of each top-level module's parameters ({"grad_norm/<name>": float}); modules without
    gradients are left out."""
    out = {}
    for name, child in model.named_children():
        grads = [p.grad.detach().double().pow(2).sum() for p in child.parameters() if p.grad is not None]
        if grads:
            out[f"grad_norm/{name}"] = float(torch.stack(grads).sum().sqrt())
    return out


def probe_metrics(probe: ProbeOutput) -> dict[str, float]:
    """The health metrics and flags of one probe (see the module docstring); NaN where a probe does not apply."""
    out = {"slot_cosine": slot_cosine(probe.slots), "slot_sensitivity": input_sensitivity(probe.slots),
           "pred_sensitivity": input_sensitivity(probe.prediction)}
    for key, attn, axis in (("encoder_entropy", probe.encoder_attention, -2),
                            ("decoder_entropy", probe.decoder_attention, -1)):
        out[key] = attention_entropy(attn, axis) if attn is not None else float("nan")
    out["collapsed_slots"] = float(out["slot_cosine"] > COLLAPSE_COSINE)
    out["constant_predictions"] = float(not out["pred_sensitivity"] >= CONSTANT_SENSITIVITY)
    return out


@torch.no_grad()
def measure(task, model: nn.Module, batch: dict) -> dict[str, float]:
    """Run `task.probe` on `batch` in eval mode (the model's mode is restored) and return `probe_metrics`."""
    was_training = model.training
    model.eval()
    try:
        return probe_metrics(task.probe(model, batch))
    finally:
        model.train(was_training)


def warnings_for(metrics: dict[str, float]) -> dict[str, str]:
    """{flag: human-readable warning} for the raised flags of one probe."""
    out = {}
    if metrics.get("collapsed_slots"):
        out["collapsed_slots"] = (f"slots collapsed: pairwise cosine {metrics['slot_cosine']:.3f} > "
                                  f"{COLLAPSE_COSINE} (the slots are copies of one another; check the slot "
                                  "initialisation and the encoder attention)")
    if metrics.get("constant_predictions"):
        out["constant_predictions"] = (f"constant predictions: pred_sensitivity {metrics['pred_sensitivity']:.2g} < "
                                       f"{CONSTANT_SENSITIVITY} (the output barely depends on the input)")
    return out


def summarise(records: list[dict]) -> dict[str, float]:
    """eval.json's health summary from the health records of a run: the first (at the first log step) and the
    last value of each metric, and the fraction of probes after the first that raised each flag."""
    if not records:
        return {}
    first, last = records[0], records[-1]
    keys = [k for k in last if k not in ("step", "split", "time")]
    out = {}
    for k in keys:
        if k in ("collapsed_slots", "constant_predictions"):
            later = [float(r.get(k, 0.0)) for r in records[1:]] or [float(last.get(k, 0.0))]
            out[f"{k}_fraction"] = sum(later) / len(later)
            out[k] = float(last.get(k, 0.0))
        else:
            out[k] = _float(last.get(k))
            out[f"{k}_first"] = _float(first.get(k))
    out["probe_step_first"], out["probe_step_last"] = float(first["step"]), float(last["step"])
    return out


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
