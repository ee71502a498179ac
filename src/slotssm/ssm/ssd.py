"""State-space duality (Mamba2: one scalar decay per head), in mamba_ssm's `mamba_chunk_scan_combined` convention.

Legend: B' batch, T time, H heads, P head width, G groups of B/C (H % G == 0), N state size, L chunk length.

    h_t = exp(dt_t * A) h_{t-1} + dt_t * x_t B_t^T          (per head: h_t in R^{P x N})
    y_t = h_t C_t + D * x_t ;  y <- y * silu(z)

"ref" is the sequential loop. "chunked" is the SSD algorithm: inside a chunk of L steps the output is a masked
(L x L) attention-like matmul with decays exp(segsum(dt*A)) (differences of cumulative log-decays, never a division
by cumulative products); chunk-end states are passed between chunks by one more small decay matmul. T needs not be
a multiple of L: the tail is padded with dt = 0, which leaves the state untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from slotssm.ssm import kernels
from slotssm.ssm._checks import (
    check_dtypes,
    check_float,
    check_nonnegative_steps,
    check_shape,
    check_stable,
    compute_dtype,
    to_compute,
)


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = 64,
    impl: str = "auto",
):
    """Mamba2 scan.

    Args:
        x: (B', T, H, P); dt: (B', T, H); A: (H,); B, C: (B', T, G, N); D: (H,) or (H, P); z: (B', T, H, P) or None;
        dt_bias: (H,); initial_state: (B', H, P, N). A <= 0; without dt_softplus, dt + dt_bias >= 0.
    Dtypes: the rule of selective_scan (slotssm.ssm._checks); B' = 0 gives empty results.
    Returns:
        y (B', T, H, P), and the final state (B', H, P, N) when `return_final_state`, both in x's dtype.
    """
    _check_ssd_args(x, dt, A, B, C, D, z, dt_bias, initial_state, chunk_size, dt_softplus)
    impl = kernels.resolve_impl("ssd_scan", impl, x.device)
    check_stable("A", A)  # values last: a bad shape, dtype or impl is named first
    if not dt_softplus:
        check_nonnegative_steps("dt", dt, dt_bias, "dt_bias", "dt_softplus")
    if x.shape[0] == 0:
        impl = "ref"  # batch 0: empty results (and zero gradients) whatever the implementation
    if impl == "cuda":
        return kernels.mamba_chunk_scan(
            x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, initial_state, return_final_state
        )
    out_dtype, cdt = x.dtype, compute_dtype(x.dtype)
    with torch.autocast(x.device.type, enabled=False):  # the compute dtype is ours, not autocast's
        x, dt, A, B, C, D, z, dt_bias, initial_state = to_compute(cdt, x, dt, A, B, C, D, z, dt_bias, initial_state)
        if dt_bias is not None:
            dt = dt + dt_bias
        if dt_softplus:
            dt = F.softplus(dt)
        h = x.shape[2]
        if impl == "fused":  # grouped B, C (the kernel shares them across a group's heads), skip and gate inside
            from slotssm.ssm.fused import fused_ssd_scan

            y, last = fused_ssd_scan(x, dt, A, B, C, D, z, initial_state, chunk_size)
            return (y.to(out_dtype), last.to(out_dtype)) if return_final_state else y.to(out_dtype)
        Bh, Ch = (repeat(v, "b t g n -> b t (g r) n", r=h // v.shape[2]) for v in (B, C))  # (B', T, H, N)
        if impl == "ref":
            y, last = ssd_scan_ref(x, dt, A, Bh, Ch, initial_state)
        else:  # "chunked"
            y, last = ssd_scan_chunked(x, dt, A, Bh, Ch, initial_state, chunk_size)
        if D is not None:
            y = y + x * (D[:, None] if D.dim() == 1 else D)
        if z is not None:
            y = y * F.silu(z)
    y, last = y.to(out_dtype), last.to(out_dtype)
    return (y, last) if return_final_state else y


def _check_ssd_args(x, dt, A, B, C, D, z, dt_bias, initial_state, chunk_size, dt_softplus) -> None:
    check_float("x", x)
    if x.dim() != 4:
        raise ValueError(f"x: expected shape (B', T, H, P), got {tuple(x.shape)}")
    bsz, t, h, p = x.shape
    if t == 0:
        raise ValueError("x: the time axis T must be >= 1, got 0")
    check_shape("dt", dt, (bsz, t, h), "(B', T, H)")
    check_shape("A", A, (h,), "(H,)")
    for name, v in (("B", B), ("C", C)):
        check_float(name, v)
        if v.dim() != 4 or v.shape[:2] != (bsz, t) or h % v.shape[2] != 0:
            raise ValueError(f"{name}: expected shape (B'={bsz}, T={t}, G, N) with H={h} divisible by G, got {tuple(v.shape)}")
    if B.shape != C.shape:
        raise ValueError(f"B and C must have the same shape, got B {tuple(B.shape)} and C {tuple(C.shape)}")
    n = B.shape[3]
    if D is not None:
        check_float("D", D)
    if D is not None and tuple(D.shape) not in ((h,), (h, p)):
        raise ValueError(f"D: expected shape (H,) = ({h},) or (H, P) = ({h}, {p}), got {tuple(D.shape)}")
    if z is not None:
        check_shape("z", z, (bsz, t, h, p), "(B', T, H, P)")
    if dt_bias is not None:
        check_shape("dt_bias", dt_bias, (h,), "(H,)")
    if initial_state is not None:
        check_shape("initial_state", initial_state, (bsz, h, p, n), "(B', H, P, N)")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    check_dtypes("x", x, dict(dt=dt, B=B, C=C, z=z), dict(A=A, D=D, dt_bias=dt_bias, initial_state=initial_state))


def ssd_scan_ref(x, dt, A, B, C, initial_state=None):
    """The specification: a loop over time. x (B', T, H, P); dt (B', T, H) final; B, C (B', T, H, N) per head."""
    bsz, t, h, p = x.shape
    state = x.new_zeros(bsz, h, p, B.shape[-1]) if initial_state is None else initial_state
    ys = []
    for xt, dtt, Bt, Ct in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        decay = torch.exp(dtt * A)[..., None, None]  # (B', H, 1, 1)
        state = decay * state + (dtt[..., None] * xt)[..., None] * Bt[:, :, None, :]  # (B', H, P, N)
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ct))
    return torch.stack(ys, dim=1), state


def segsum(a: Tensor) -> Tensor:
    """(..., L) log-decays -> (..., L, L) with [i, j] = sum_{j < k <= i} a_k for j <= i and -inf above the diagonal."""
    L = a.shape[-1]
    a = a[..., None].expand(*a.shape, L)  # [..., k, j] = a_k
    below = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a.device), diagonal=-1)
    s = torch.cumsum(a.masked_fill(~below, 0), dim=-2)  # [i, j] = sum_{j < k <= i} a_k
    return s.masked_fill(~torch.tril(torch.ones_like(below)), float("-inf"))


def ssd_scan_chunked(x, dt, A, B, C, initial_state=None, chunk_size=64):
    """SSD by chunks; same arguments and results as `ssd_scan_ref`."""
    bsz, t, h, p = x.shape
    L = min(chunk_size, t)
    pad = (-t) % L
    if pad:
        x, B, C = (F.pad(v, (0, 0, 0, 0, 0, pad)) for v in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    xd = x * dt[..., None]  # dt-scaled input  (B', T, H, P)
    xc, Bc, Cc = (rearrange(v, "b (c l) h d -> b c l h d", l=L) for v in (xd, B, C))
    a = rearrange(dt * A, "b (c l) h -> b h c l", l=L)  # log-decays  (B', H, c, L)
    a_cum = torch.cumsum(a, dim=-1)
    # 1. within chunks: y_i = sum_{j<=i} C_i.B_j exp(a_{j+1..i}) xd_j
    decay_in = torch.exp(segsum(a))  # (B', H, c, L, L)
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, decay_in, xc)
    # 2. each chunk's end state from its own inputs
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (B', H, c, L)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, to_end, xc)  # (B', c, H, P, N)
    # 3. pass states between chunks (a small c x c decay matmul)
    h0 = x.new_zeros(bsz, 1, h, p, B.shape[-1]) if initial_state is None else initial_state[:, None]
    states = torch.cat([h0, states], dim=1)  # (B', c+1, H, P, N)
    decay_chunk = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (B', H, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    carried, final = states[:, :-1], states[:, -1]
    # 4. the carried-in state's contribution at each position
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, carried, torch.exp(a_cum))
    return rearrange(y, "b c l h p -> b (c l) h p")[:, :t], final
