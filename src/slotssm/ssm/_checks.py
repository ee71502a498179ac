"""Argument checks shared by the scans: errors name the argument, the expected shape and the shape received.

One dtype rule for every `impl` (`check_dtypes`): the activations (u/x, delta/dt, B, C, z) share the first
argument's dtype; the parameters (A, D, the bias) and the initial state share it too, or are float32 when the
activations are float16/bfloat16 (mamba_ssm's convention, and what autocast produces). float16/bfloat16 are
computed in float32; the results come back in the first argument's dtype. Any other mix is a ValueError naming both
arguments. NaN or Inf in the inputs is not checked: it propagates as in torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slotssm.arrays import check_float

HALF = (torch.float16, torch.bfloat16)


def check_shape(name: str, x, shape: tuple[int, ...], legend: str) -> None:
    check_float(name, x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {legend} = {tuple(shape)}, got {tuple(x.shape)}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a scan computes in for activations of `dtype`."""
    return torch.float32 if dtype in HALF else dtype


def check_dtypes(first: str, x: Tensor, activations: dict, params: dict) -> None:
    """`activations` must have `x`'s dtype; `params` that dtype or float32 when it is half. Same device for all."""
    allowed = {x.dtype, torch.float32} if x.dtype in HALF else {x.dtype}
    for group, ok in ((activations, {x.dtype}), (params, allowed)):
        for name, v in group.items():
            if v is None:
                continue
            if v.dtype not in ok:
                extra = " or float32" if len(ok) > 1 else ""
                raise ValueError(
                    f"{name}: dtype {v.dtype} does not match {first}'s {x.dtype}; expected {x.dtype}{extra} "
                    f"(pass every tensor in one dtype)"
                )
            if v.device != x.device:
                raise ValueError(f"{name}: on device {v.device}, but {first} is on {x.device}; expected one device")


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def check_stable(name: str, A: Tensor) -> None:
    """A is a continuous-time decay rate: exp(dt * A) <= 1 needs A <= 0 (positive entries grow without bound)."""
    if not _compiling() and bool((A > 0).any()):
        raise ValueError(
            f"{name}: expected every entry <= 0 (a stable decay exp(dt*{name}) <= 1), got max {A.max().item():.4g}; "
            f"Mamba parametrises {name} = -exp({name}_log)"
        )


def check_nonnegative_steps(name: str, dt: Tensor, bias: Tensor | None, bias_name: str, softplus_name: str) -> None:
    """Without softplus the time steps are used as given: a negative step inverts the decay and grows the state."""
    if _compiling():
        return
    steps = dt if bias is None else dt + bias
    if steps.numel() and bool((steps < 0).any()):
        raise ValueError(
            f"{name}: without {softplus_name}=True the time steps {name} (+ {bias_name}) must be >= 0, got min "
            f"{steps.min().item():.4g}; pass {softplus_name}=True or non-negative {name}"
        )


def to_compute(dtype: torch.dtype, *tensors):
    """Cast `tensors` (None kept) to `dtype`."""
    return tuple(None if v is None else v.to(dtype) for v in tensors)


__all__ = [
    "HALF", "check_dtypes", "check_float", "check_nonnegative_steps", "check_shape", "check_stable", "compute_dtype",
    "to_compute",
]
