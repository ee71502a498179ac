"""Kernel dispatch: which implementation of a scan runs, resolved once per (op, device) and logged.

`impl="auto"` encodes measurements (benchmarks/scan.py): on a CPU the fused numba kernel when numba is importable,
else the cache-resident per-step loop for Mamba1 and the chunked SSD for Mamba2; on CUDA mamba_ssm's kernels when
installed, else the chunked pure-PyTorch forms. Asking explicitly for an implementation that is not available is an
error, never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch

log = logging.getLogger("slotssm.ssm")

IMPLS = {
    "selective_scan": ("ref", "loop", "chunked", "fused", "cuda"),
    "ssd_scan": ("ref", "chunked", "fused", "cuda"),
}


@functools.cache
def has_numba() -> bool:
    return importlib.util.find_spec("numba") is not None  # a dependency; False only in a broken install


@functools.cache
def has_fused(op: str) -> bool:
    """The fused CPU kernel for `op` exists (numba importable and the kernel implemented)."""
    if not has_numba():
        return False
    from slotssm.ssm import fused

    return op in getattr(fused, "FUSED_OPS", ())


@functools.cache
def has_mamba_ssm() -> bool:
    return importlib.util.find_spec("mamba_ssm") is not None


def available(op: str, device: torch.device) -> list[str]:
    """The implementations of `op` that can run on `device`."""
    names = ["ref", "loop", "chunked"] if op == "selective_scan" else ["ref", "chunked"]
    if device.type == "cpu" and has_fused(op):
        names.append("fused")
    if device.type == "cuda" and has_mamba_ssm():
        names.append("cuda")
    return names


@functools.cache
def _auto(op: str, device_type: str) -> str:
    dev = torch.device(device_type)
    names = available(op, dev)
    if device_type == "cuda":
        choice = "cuda" if "cuda" in names else "chunked"
    elif "fused" in names:
        choice = "fused"
    else:
        choice = "loop" if op == "selective_scan" else "chunked"
    log.info("slotssm: %s on %s uses impl=%r (available: %s)", op, device_type, choice, ", ".join(names))
    return choice


def resolve_impl(op: str, impl: str, device: torch.device) -> str:
    """Resolve `impl` for `op` on `device`; raise ValueError if unknown or unavailable."""
    if impl not in IMPLS[op] and impl != "auto":
        raise ValueError(f"impl: expected one of {('auto',) + IMPLS[op]} for {op}, got {impl!r}")
    if impl == "auto":
        return _auto(op, device.type)
    if impl not in available(op, device):
        why = {
            "fused": "needs a CPU tensor and numba (pip install numba)",
            "cuda": "needs a CUDA tensor and mamba_ssm (pip install 'slotssm[cuda]')",
        }.get(impl, "")
        raise ValueError(f"impl={impl!r} is not available for {op} on {device.type}: {why}")
    return impl


def mamba_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state):
    """mamba_ssm's CUDA selective scan (same convention as ours)."""
    if initial_state is not None:
        raise ValueError("initial_state: mamba_ssm's CUDA selective scan takes no initial state; use impl='chunked'")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def mamba_chunk_scan(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, initial_state, return_final_state):
    """mamba_ssm's Triton SSD kernel (same convention as ours)."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus,
        initial_states=initial_state, return_final_states=return_final_state,
    )
