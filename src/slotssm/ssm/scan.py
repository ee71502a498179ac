"""Selective scan (Mamba1: a diagonal A per channel), in mamba_ssm's `selective_scan_fn` convention.

Legend: B' batch (for SlotSSM: batch x slots), E expanded SSM channels, N state size, T time, G groups of B/C.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        (per channel e: h_t[e] in R^N; paper eq. 3, ZOH-Euler)
    y_t = C_t . h_t + D * u_t ;  y <- y * silu(z)            (gate, when z is given)

Implementations (all take and return a state; all equal to `ref` to float tolerance, values and gradients):
  "ref"      the obvious sequential loop with autograd: the specification.
  "loop"     a sequential loop inside a custom autograd Function: the per-step terms are formed on the fly, so the
             (B', E, T, N) tensors are never materialised; forward keeps a state checkpoint every `chunk` steps and
             backward runs the reverse-time adjoint recurrence, recomputing each chunk's states from its checkpoint.
             Peak extra memory O(B'.E.N.T/chunk); on a CPU the per-step working set fits in cache.
  "chunked"  parallel across chunks: every chunk is scanned from a zero state at once (a loop of `chunk` steps over
             all chunks together), the chunk-end states are carried by a loop over chunks, and each position adds its
             carried-in state times its within-chunk cumulative decay exp(sum dt*A) (a product of factors <= 1:
             no division by cumulative products). ~2*sqrt(T) sequential steps instead of T: for GPUs.
  "fused"    numba kernel for CPU tensors (slotssm.ssm.fused; numba is a dependency).
  "cuda"     mamba_ssm's CUDA kernel (an error if asked for and not installed).
  "auto"     resolved per device by `slotssm.ssm.kernels.resolve_impl` and logged once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
    impl: str = "auto",
    chunk: int | None = None,
):
    """Mamba1 selective scan.

    Args:
        u, delta: (B', E, T) inputs and time steps; z: (B', E, T) gate or None.
        A: (E, N) real, <= 0; B, C: (B', N, T) or grouped (B', G, N, T) with E % G == 0.
        D: (E,) skip; delta_bias: (E,) added to delta before the optional softplus (without it, delta + delta_bias
        must be >= 0).
        initial_state: (B', E, N) state before the first step (zeros if None).
        impl: one of IMPLS; chunk: checkpoint / chunk length for "loop", "chunked" and "fused" (None: their default).
    Dtypes: one rule for every impl (slotssm.ssm._checks): u's dtype everywhere, or float32 parameters (A, D,
    delta_bias, initial_state) with float16/bfloat16 activations, computed in float32. B' = 0 gives empty results.
    Returns:
        y (B', E, T), and the last state (B', E, N) when `return_last_state`, both in u's dtype.
    """
    _check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus)
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ValueError(f"chunk: expected a positive int or None, got {chunk!r}")
    impl = kernels.resolve_impl("selective_scan", impl, u.device)
    check_stable("A", A)  # values last: a bad shape, dtype or impl is named first
    if not delta_softplus:
        check_nonnegative_steps("delta", delta, None if delta_bias is None else delta_bias[:, None], "delta_bias", "delta_softplus")
    if u.shape[0] == 0:
        impl = "ref"  # batch 0: empty results (and zero gradients) whatever the implementation
    if impl == "cuda":
        return kernels.mamba_selective_scan(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state
        )
    if impl == "fused":  # bias, softplus, skip and gate inside the kernel; casts like below
        from slotssm.ssm.fused import fused_selective_scan

        y, last = fused_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk)
        return (y, last) if return_last_state else y
    out_dtype, cdt = u.dtype, compute_dtype(u.dtype)
    with torch.autocast(u.device.type, enabled=False):  # the compute dtype is ours, not autocast's
        u, delta, A, B, C, D, z, delta_bias, initial_state = to_compute(
            cdt, u, delta, A, B, C, D, z, delta_bias, initial_state
        )
        dt = delta if delta_bias is None else delta + delta_bias[:, None]
        if delta_softplus:
            dt = F.softplus(dt)
        if impl == "ref":
            y, last = selective_scan_ref(u, dt, A, B, C, initial_state)
        elif impl == "loop":
            y, last = _LoopScan.apply(u, dt, A, B, C, initial_state, chunk or 64)
        else:  # "chunked"
            y, last = selective_scan_chunked(u, dt, A, B, C, initial_state, chunk)
        if D is not None:
            y = y + u * D[:, None]
        if z is not None:
            y = y * F.silu(z)
    y, last = y.to(out_dtype), last.to(out_dtype)
    return (y, last) if return_last_state else y


def _check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus) -> None:
    check_float("u", u)
    if u.dim() != 3:
        raise ValueError(f"u: expected shape (B', E, T), got {tuple(u.shape)}")
    bsz, e, t = u.shape
    if t == 0:
        raise ValueError("u: the time axis T must be >= 1, got 0")
    check_shape("delta", delta, (bsz, e, t), "(B', E, T)")
    check_float("A", A)
    if A.dim() != 2 or A.shape[0] != e:
        raise ValueError(f"A: expected shape (E={e}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        check_float(name, x)
        if x.dim() == 3:
            check_shape(name, x, (bsz, n, t), "(B', N, T)")
        elif x.dim() == 4:
            if x.shape[0] != bsz or x.shape[2:] != (n, t) or e % x.shape[1] != 0:
                raise ValueError(
                    f"{name}: expected shape (B'={bsz}, G, N={n}, T={t}) with E={e} divisible by G, got {tuple(x.shape)}"
                )
        else:
            raise ValueError(f"{name}: expected shape (B', N, T) or (B', G, N, T), got {tuple(x.shape)}")
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"B and C must have the same grouping, got B {tuple(B.shape)} and C {tuple(C.shape)}")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None:
            check_shape(name, x, (e,), "(E,)")
    if z is not None:
        check_shape("z", z, (bsz, e, t), "(B', E, T)")
    if initial_state is not None:
        check_shape("initial_state", initial_state, (bsz, e, n), "(B', E, N)")
    check_dtypes("u", u, dict(delta=delta, B=B, C=C, z=z),
                 dict(A=A, D=D, delta_bias=delta_bias, initial_state=initial_state))


def _grouped(X: Tensor, e: int) -> Tensor:
    """B or C as (B', G, N, T) -> per-channel (B', E, N, T) view (expand, no copy)."""
    if X.dim() == 3:
        return X[:, None].expand(-1, e, -1, -1)
    bsz, g, n, t = X.shape
    return X[:, :, None].expand(bsz, g, e // g, n, t).reshape(bsz, e, n, t)


def selective_scan_ref(u, dt, A, B, C, initial_state=None):
    """The specification: a plain loop over time. dt is the final step size (bias and softplus applied).

    u, dt (B', E, T); A (E, N); B, C (B', [G,] N, T) -> y (B', E, T) (no D, no gate), last state (B', E, N).
    """
    bsz, e, t = u.shape
    Bx, Cx = _grouped(B, e), _grouped(C, e)  # (B', E, N, T)
    h = u.new_zeros(bsz, e, A.shape[1]) if initial_state is None else initial_state
    ys = []
    for i in range(t):
        dA = torch.exp(dt[:, :, i, None] * A)  # (B', E, N)
        h = dA * h + (dt[:, :, i] * u[:, :, i])[:, :, None] * Bx[..., i]
        ys.append((h * Cx[..., i]).sum(-1))  # (B', E)
    return torch.stack(ys, dim=-1), h


# ---------------------------------------------------------------------------------------------------------------
# "chunked": parallel across chunks (for GPUs; differentiable through autograd)


def selective_scan_chunked(u, dt, A, B, C, initial_state=None, chunk=None):
    """Two-level scan; same arguments and results as `selective_scan_ref`."""
    bsz, e, t = u.shape
    n = A.shape[1]
    L = chunk or max(8, int(math.ceil(math.sqrt(t))))
    nc = -(-t // L)
    pad = nc * L - t
    # Padding with dt = 0 leaves the state untouched (decay 1, input 0).
    up, dtp = (F.pad(x, (0, pad)) for x in (u, dt))
    Bx, Cx = (F.pad(_grouped(x, e), (0, pad)) for x in (B, C))  # (B', E, N, nc*L)
    dtA = dtp.view(bsz, e, nc, L)[..., None] * A[:, None, None, :]  # (B', E, nc, L, N)
    dBu = (dtp * up).view(bsz, e, nc, L)[..., None] * Bx.view(bsz, e, n, nc, L).permute(0, 1, 3, 4, 2)
    # Within-chunk scans from zero, all chunks at once.
    h = u.new_zeros(bsz, e, nc, n)
    local = []
    for i in range(L):
        h = torch.exp(dtA[:, :, :, i]) * h + dBu[:, :, :, i]
        local.append(h)
    local = torch.stack(local, dim=3)  # (B', E, nc, L, N)
    decay = torch.exp(torch.cumsum(dtA, dim=3))  # within-chunk cumulative decay (B', E, nc, L, N), factors <= 1
    # Carry the states across chunks.
    carry = u.new_zeros(bsz, e, n) if initial_state is None else initial_state
    carried = []
    for c in range(nc):
        carried.append(carry)
        carry = decay[:, :, c, -1] * carry + local[:, :, c, -1]
    hs = local + decay * torch.stack(carried, dim=2)[:, :, :, None]  # (B', E, nc, L, N)
    Cc = Cx.view(bsz, e, n, nc, L).permute(0, 1, 3, 4, 2)  # (B', E, nc, L, N)
    y = (hs * Cc).sum(-1).reshape(bsz, e, nc * L)[..., :t]
    return y, carry


# ---------------------------------------------------------------------------------------------------------------
# "loop": sequential, cache-resident, with a recomputing adjoint backward


class _LoopScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, h0, chunk):
        bsz, e, t = u.shape
        h, dtb, dtub, Bt, Ct, Ab = _loop_views(u, dt, A, B, C, h0)
        ys, ckpts = [], []
        for i in range(t):
            if i % chunk == 0:
                ckpts.append(h)
            h = torch.exp(dtb[i].unsqueeze(-1) * Ab) * h  # decay (B'G, E/G, N)
            h.addcmul_(dtub[i].unsqueeze(-1), Bt[i].unsqueeze(-2))  # + dt u B
            ys.append(torch.bmm(h, Ct[i].unsqueeze(-1)).squeeze(-1))  # C . h  (B'G, E/G)
        y = torch.stack(ys, dim=-1).view(bsz, e, t)
        ctx.save_for_backward(u, dt, A, B, C, *ckpts)
        ctx.chunk, ctx.has_h0 = chunk, h0 is not None
        return y, h.reshape(bsz, e, -1)

    @staticmethod
    def backward(ctx, dy, dlast):
        u, dt, A, B, C, *ckpts = ctx.saved_tensors
        chunk = ctx.chunk
        bsz, e, t = u.shape
        _, dtb, dtub, Bt, Ct, Ab = _loop_views(u, dt, A, B, C, None)
        dyb = dy.reshape(dtb.shape[1], dtb.shape[2], t).permute(2, 0, 1)  # (T, B'G, E/G)
        gh = torch.zeros_like(ckpts[0]) if dlast is None else dlast.reshape(ckpts[0].shape).clone()
        d_dtu, d_dtA = torch.empty_like(dtb), torch.empty_like(dtb)  # (T, B'G, E/G)
        dB, dC = torch.empty_like(Bt), torch.empty_like(Ct)  # (T, B'G, N)
        dA_acc = torch.zeros_like(gh)
        for c in reversed(range(len(ckpts))):
            lo, hi = c * chunk, min(t, (c + 1) * chunk)
            # Recompute the chunk from its checkpoint: states[j] = h_{lo+j-1}, decays[j] = exp(dt A) at step lo+j.
            states, decays = [ckpts[c]], []
            for i in range(lo, hi):
                decays.append(torch.exp(dtb[i].unsqueeze(-1) * Ab))
                states.append(torch.addcmul(decays[-1] * states[-1], dtub[i].unsqueeze(-1), Bt[i].unsqueeze(-2)))
            for i in reversed(range(lo, hi)):
                j = i - lo
                # y_i = C_i . h_i: the adjoint of h_i gains dy_i C_i; C_i's gradient is sum_e dy_i h_i.
                dC[i] = torch.bmm(dyb[i].unsqueeze(-2), states[j + 1]).squeeze(-2)
                gh.addcmul_(dyb[i].unsqueeze(-1), Ct[i].unsqueeze(-2))
                # h_i = exp(dt_i A) h_{i-1} + (dt u)_i B_i
                dB[i] = torch.bmm(dtub[i].unsqueeze(-2), gh).squeeze(-2)
                d_dtu[i] = torch.bmm(gh, Bt[i].unsqueeze(-1)).squeeze(-1)
                q = gh * states[j] * decays[j]  # gradient wrt (dt A)_i   (B'G, E/G, N)
                d_dtA[i] = (q * Ab).sum(-1)
                dA_acc.addcmul_(q, dtb[i].unsqueeze(-1))
                gh = gh * decays[j]
        d_dtu = d_dtu.permute(1, 2, 0).reshape(bsz, e, t)
        d_dtA = d_dtA.permute(1, 2, 0).reshape(bsz, e, t)
        du = d_dtu * dt
        ddt = d_dtu * u + d_dtA
        g = B.shape[1] if B.dim() == 4 else 1
        dA = dA_acc.view(bsz, g, e // g, -1).sum(0).reshape(e, -1)
        dB = dB.permute(1, 2, 0).reshape(B.shape)
        dC = dC.permute(1, 2, 0).reshape(C.shape)
        dh0 = gh.reshape(bsz, e, -1) if ctx.has_h0 else None
        return du, ddt, dA, dB, dC, dh0, None


def _loop_views(u, dt, A, B, C, h0):
    """Time-major views batched over (batch, group): each per-step slice is contiguous.

    Returns h (B'G, E/G, N), dt and dt*u (T, B'G, E/G), B and C (T, B'G, N), A as (B'G | 1, E/G, N).
    """
    bsz, e, t = u.shape
    g = B.shape[1] if B.dim() == 4 else 1
    n = A.shape[1]
    dtb = dt.reshape(bsz * g, e // g, t).permute(2, 0, 1).contiguous()  # (T, B'G, E/G)
    dtub = dtb * u.reshape(bsz * g, e // g, t).permute(2, 0, 1)
    Bt = B.reshape(bsz * g, n, t).permute(2, 0, 1).contiguous()  # (T, B'G, N)
    Ct = C.reshape(bsz * g, n, t).permute(2, 0, 1).contiguous()
    h = u.new_zeros(bsz * g, e // g, n) if h0 is None else h0.reshape(bsz * g, e // g, n).clone()
    # Rows of the batch axis are (batch, group) pairs, batch-major: tile A's groups over the batch.
    Ab = A[None] if g == 1 else A.view(1, g, e // g, n).expand(bsz, -1, -1, -1).reshape(bsz * g, e // g, n)
    return h, dtb, dtub, Bt, Ct, Ab
