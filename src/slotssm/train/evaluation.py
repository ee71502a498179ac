"""Evaluation helpers shared by the trainer and the `eval` command: AMP settings, `task.evaluate`, eval.json."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from slotssm.tasks.base import Task
from slotssm.config import atomic_write_text


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp` on `device` (None for "off"); an unsupported combination is an error."""
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"train.amp='fp16' needs a CUDA device (it uses a gradient scaler); on {device} use bf16")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"train.amp='bf16' is not supported by {torch.cuda.get_device_name(device)}; use fp16")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` to `dtype` on `device`'s type, or a no-op context when `dtype` is None."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def evaluate_model(task: Task, model: nn.Module, dataset: Dataset, *, batch_size: int, device, amp: str = "off"):
    """`task.evaluate` in eval mode under no_grad (and autocast when `amp` is on); returns floats."""
    dtype = amp_dtype(amp, torch.device(device))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(torch.device(device), dtype):
            metrics = task.evaluate(model, dataset, batch_size=batch_size, device=device)
    finally:
        model.train(was_training)
    return {k: float(v) for k, v in metrics.items()}


def json_safe(value):
    """`value` with every NaN/Inf float replaced by None, so that json.dumps writes valid JSON (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_eval_json(run_dir, *, step: int, split: str, metrics: dict[str, float], health: dict | None = None) -> Path:
    """Write `run_dir/eval.json` (val) or `run_dir/eval-<split>.json` atomically; returns the path.

    `health`: the training-health summary (`slotssm.train.health.summarise`), stored under "health".
    """
    path = Path(run_dir) / ("eval.json" if split == "val" else f"eval-{split}.json")
    record = {"step": step, "split": split, "metrics": metrics, **({"health": health} if health else {})}
    atomic_write_text(path, json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n")  # NaN -> null
    return path
