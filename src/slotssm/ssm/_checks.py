"""Argument checks shared by the scans: errors name the argument, the expected shape and the shape received."""

from __future__ import annotations

import torch
from torch import Tensor


def check_float(name: str, x) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def check_shape(name: str, x, shape: tuple[int, ...], legend: str) -> None:
    check_float(name, x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {legend} = {tuple(shape)}, got {tuple(x.shape)}")


def check_same_dtype(**tensors) -> None:
    dtypes = {k: v.dtype for k, v in tensors.items() if v is not None}
    if len(set(dtypes.values())) > 1:
        raise ValueError(f"all inputs must share one dtype, got {dtypes}")


def is_cpu(x: Tensor) -> bool:
    return x.device.type == "cpu"


__all__ = ["check_float", "check_shape", "check_same_dtype", "is_cpu", "torch"]
