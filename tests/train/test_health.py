"""Training-health probes: values in range on fresh models, collapse and constant predictions flagged, logged by the
trainer, summarised in eval.json, a time limit respected."""

from __future__ import annotations

import json
import math

import pytest
import torch

from slotssm.models import build_model
from slotssm.tasks import get_task
from slotssm.tasks.base import ProbeOutput
from slotssm.train import health
from slotssm.train.config import apply_overrides


def test_slot_cosine_and_sensitivity_on_known_inputs():
    same = torch.randn(1, 1, 1, 8).expand(3, 2, 4, 8)  # every slot, step and video identical
    assert health.slot_cosine(same) == pytest.approx(1.0)
    orth = torch.eye(4)[None, None].expand(2, 3, 4, 4)
    assert health.slot_cosine(orth) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(health.slot_cosine(torch.randn(2, 3, 1, 8)))  # one slot: no pairs
    per_video = torch.arange(4.0)[:, None, None, None].expand(4, 2, 3, 5)  # varies only across videos
    assert health.input_sensitivity(per_video) == pytest.approx(1.0)
    fixed = torch.randn(1, 2, 3, 5).expand(4, -1, -1, -1)  # varies only within a video
    assert health.input_sensitivity(fixed) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="x: expected shape"):
        health.input_sensitivity(torch.randn(1, 5))


def test_attention_entropy_finds_the_normalised_axis():
    k, m = 4, 16
    uniform_over_tokens = torch.full((2, 3, k, m), 1.0 / m)
    assert health.attention_entropy(uniform_over_tokens, -2) == pytest.approx(1.0)
    one_hot_over_slots = torch.zeros(2, 3, k, m)
    one_hot_over_slots[:, :, 0] = 1.0  # inverted attention: each token's weight sums to 1 over the slots
    assert health.attention_entropy(one_hot_over_slots, -2) == pytest.approx(0.0, abs=1e-6)
    decoder = torch.softmax(torch.randn(2, m, k) * 20, -1)  # sharp weights over the slots, slots last
    assert health.attention_entropy(decoder, -1) < 0.3


def _fresh_probe(name: str, cls_std: float | None = None):
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").eval()
    if cls_std is not None:  # an old-style start: slot queries N(0, cls_std^2), as before the std-1 fix (0.02)
        with torch.no_grad():
            for p_name, p in model.named_parameters():
                if p_name.endswith("cls") and p.shape[0] > 1:
                    p.copy_(cls_std * torch.randn_like(p))
    tokens = torch.randn(4, 3, 6, model.input_dim)
    out = model(tokens, return_attention=True)
    return out, health.probe_metrics(ProbeOutput(out.slots, out.slots.mean(2), out.attention.get("encoder")))


@pytest.mark.parametrize("name", ["slotssm", "oc_slotssm"])
def test_fresh_models_give_finite_probes_in_range_and_are_not_collapsed(name):
    _, m = _fresh_probe(name)
    assert -1 <= m["slot_cosine"] < health.COLLAPSE_COSINE and m["collapsed_slots"] == 0.0
    assert 0 < m["slot_sensitivity"] <= 1.0 and 0 < m["pred_sensitivity"] <= 1.0
    assert 0 < m["encoder_entropy"] <= 1.0
    assert m["constant_predictions"] == 0.0


def test_old_style_slot_starts_are_flagged_and_std1_starts_are_not():
    _, collapsed = _fresh_probe("slotssm", cls_std=0.02)
    assert collapsed["slot_cosine"] > health.COLLAPSE_COSINE and collapsed["collapsed_slots"] == 1.0
    assert health.warnings_for(collapsed)["collapsed_slots"].startswith("slots collapsed: pairwise cosine 0.9")
    _, fresh = _fresh_probe("slotssm")
    assert fresh["collapsed_slots"] == 0.0 and not health.warnings_for(fresh)


def test_constant_logits_are_flagged():
    slots = torch.randn(4, 2, 3, 8)
    logits = torch.randn(1, 36).expand(4, -1)  # the same answer for every video
    m = health.probe_metrics(ProbeOutput(slots, logits))
    assert m["constant_predictions"] == 1.0 and math.isnan(m["encoder_entropy"])
    assert health.warnings_for(m)["constant_predictions"].startswith("constant predictions:")
    varied = health.probe_metrics(ProbeOutput(slots, torch.randn(4, 36)))
    assert varied["constant_predictions"] == 0.0


@pytest.mark.parametrize("task_name", ["video_prediction", "object_centric", "blinking_balls", "snitch_localization"])
def test_every_task_probe_runs(task_name, tmp_path):
    task_cls = get_task(task_name)
    task = task_cls(task_cls.default_config("tiny", "slotssm"), tmp_path)
    model = task.build_model()
    _, val = task.datasets()
    batch = task.collate([val[i] for i in range(2)])
    m = health.measure(task, model, batch)
    assert model.training  # mode restored
    assert 0 <= m["slot_sensitivity"] <= 1 and -1 <= m["slot_cosine"] <= 1
    assert math.isfinite(m["pred_sensitivity"])
    if task_name == "snitch_localization":  # a classifier: no decoder attention
        assert math.isnan(m["decoder_entropy"])
    else:
        assert 0 < m["decoder_entropy"] <= 1


def test_trainer_logs_health_summarises_it_and_stops_at_the_time_limit(tmp_path):
    from slotssm.train.metrics_log import read_metrics
    from slotssm.train.trainer import train

    task_cls = get_task("video_prediction")
    cfg = apply_overrides(task_cls.default_config("tiny", "slotssm"),
                          ["train.steps=100000", "train.log_every=1", "train.time_limit_s=2"])
    metrics = train(cfg, tmp_path / "run", data_dir=tmp_path / "data", progress=False)
    assert 1 <= metrics["step"] < 100000  # stopped by the clock, not the step count
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    probes = [r for r in records if r["split"] == "health"]
    assert len(probes) == metrics["step"] and {"slot_cosine", "grad_norm/encoder", "grad_norm/seq"} <= set(probes[-1])
    assert any(r.get("time_limit_reached") == 1.0 for r in records)
    summary = json.loads((tmp_path / "run" / "eval.json").read_text())["health"]
    assert summary["probe_step_last"] == metrics["step"] and "slot_cosine_first" in summary


def test_grad_norms_are_taken_before_clipping(tmp_path):
    """The per-module norms say what the loss sends to each module, so they are read before the clip."""
    from slotssm.train.metrics_log import read_metrics
    from slotssm.train.trainer import train

    task_cls = get_task("video_prediction")
    cfg = apply_overrides(task_cls.default_config("tiny", "slotssm"),
                          ["train.steps=2", "train.log_every=1", "train.optim.grad_clip=1e-6"])
    train(cfg, tmp_path / "run", data_dir=tmp_path / "data", progress=False)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    probe = [r for r in records if r["split"] == "health"][0]
    total = math.sqrt(sum(v**2 for k, v in probe.items() if k.startswith("grad_norm/")))
    assert total > 1e-4  # clipped norms would sum to 1e-6
