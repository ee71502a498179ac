"""Helpers for arguments that may be numpy arrays or torch tensors, shared across the floors.

`to_numpy` is the one conversion of metrics and viz (numpy in, numpy out; torch tensors accepted). `check_float`
is the one "a floating-point torch.Tensor" check of the scans, the Mamba blocks and the sequence models; its errors
name the argument.

Why here, on the ground floor: metrics and viz stand on the same floor and neither should import the other (viz
would pull in scipy and torch, metrics matplotlib), and the scans (`slotssm.ssm`) sit below the models. This module
imports nothing of the project, and not torch at import time either, so viz stays importable without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy", "check_float"]


def to_numpy(x: Any, *, float32: bool = False) -> np.ndarray:
    """x as a numpy array: a torch tensor is detached and copied to the CPU, anything else goes through np.asarray.

    float32: cast floating-point tensors to float32 first (bfloat16 has no numpy dtype; pictures need no more);
    numpy arrays keep their dtype.
    """
    if hasattr(x, "detach"):  # a torch.Tensor (duck-typed: importing torch here would load it for viz)
        x = x.detach().cpu()
        x = x.float().numpy() if float32 and x.is_floating_point() else x.numpy()
    return np.asarray(x)


def check_float(name: str, x: Any, legend: str = "") -> None:
    """x must be a floating-point torch.Tensor: TypeError otherwise, ValueError for another dtype; `legend` (e.g.
    "(B, T, M, D_in)") is named in the message."""
    from torch import Tensor  # the callers hold tensors, so torch is loaded already

    shape = f" {legend}" if legend else ""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor{shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor{shape}, got dtype {x.dtype}")
