"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr_ratio` of the peak, then flat.

The multiplier for optimizer step `s` (0-based: the s-th update uses `lr * lr_multiplier(s, ...)`):

    s <  W:          (s + 1) / W                                  warmup reaches the peak on its last step
    W <= s < S:      r + (1 - r) * (1 + cos(pi * (s - W) / (S - W))) / 2
    s >= S:          r                                            (only if training runs past `total_steps`)

with W = warmup_steps, S = total_steps, r = min_lr_ratio.
"""

from __future__ import annotations

import math

import torch

from slotssm.config import OptimConfig


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Factor applied to the peak learning rate at 0-based optimizer step `step`."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return min_lr_ratio
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int):
    """A `LambdaLR` following `lr_multiplier`; call `.step()` once after every optimizer step."""

    def multiplier(step: int) -> float:  # a plain function: LambdaLR's state_dict then holds only numbers
        return lr_multiplier(
            step, warmup_steps=optim.warmup_steps, total_steps=total_steps, min_lr_ratio=optim.min_lr_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
