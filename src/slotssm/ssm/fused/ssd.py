"""Mamba2 (SSD) fused kernels (`fused_ssd_scan`): per (batch, head), h in R^{P x N}, one scalar decay per step.

The scheme of the Mamba1 kernels (`fused.scan`): one pass over time, checkpoints every L steps, a recomputing
reverse-time adjoint backward. Legend: B' batch, T time, H heads, P head width, E = H P channels, N state size,
G groups of B/C, L checkpoint interval, W work items (batch x group x channel block).

The channels of a group, c = (head, p) over its H/G heads, are the lanes, as for Mamba1: x, z, y (B', T, E = H P);
dt (B', T, H) final; A (H,); B, C (B', T, G, N) shared by the group's heads; D (E,); h0, last (B', E, N);
ckpt (B', ceil(T/L), N, E). Blocks of channels hold whole heads (dt's gradient sums over p).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from slotssm.ssm.fused.common import _FM, _blocks, _jit, _np, _setup, _threads, _work_item
from slotssm.ssm.fused.math32 import _ONE, fast_exp, sigmoid, zero


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _ssd_step_in(dt, x, A, b, t, e0, hm, qv, dxv):
    """Per-lane decay exp(dt_h A_h) and dt_h x of one step (lane c belongs to head hm[c])."""
    for c in range(qv.shape[0]):
        d = dt[b, t, hm[c]]
        qv[c] = fast_exp(d * A[hm[c]])
        dxv[c] = d * x[b, t, e0 + c]


@_jit
def _ssd_fwd(x, dt, A, B, C, D, z, h0, has_z, has_h0, p, chunk, nblk, y, last, ckpt):
    nb, nt, ne = x.shape
    ng, n = B.shape[2], B.shape[3]
    for w in prange(nb * ng * nblk):
        b, gi, e0, ec = _work_item(w, nb, ng, nblk, ne // ng, p)
        hm = np.empty(ec, np.int64)
        S, qv, dxv, yv = np.empty((n, ec), x.dtype), np.empty(ec, x.dtype), np.empty(ec, x.dtype), np.empty(ec, x.dtype)
        for c in range(ec):
            hm[c] = (e0 + c) // p
            for i in range(n):
                S[i, c] = h0[b, e0 + c, i] if has_h0 else zero(qv[0])
        for t in range(nt):
            if t % chunk == 0:
                ckpt[b, t // chunk, :, e0:e0 + ec] = S
            _ssd_step_in(dt, x, A, b, t, e0, hm, qv, dxv)
            yv[:] = 0
            for i in range(n):  # S = q S + B (dt x) ;  y = C.S   (vectorised over the ec channels)
                bi, ci = B[b, t, gi, i], C[b, t, gi, i]
                for c in range(ec):
                    sv = qv[c] * S[i, c] + bi * dxv[c]
                    S[i, c] = sv
                    yv[c] += ci * sv
            yr, xr, zr = y[b, t], x[b, t], z[b, t] if has_z else z[0, 0]
            for c in range(ec):  # y = (C.S + D x) * silu(z), written once
                v = yv[c] + D[e0 + c] * xr[e0 + c]
                yr[e0 + c] = v * zr[e0 + c] * sigmoid(zr[e0 + c]) if has_z else v
        for c in range(ec):
            last[b, e0 + c, :] = S[:, c]


@_jit
def _ssd_bwd(x, dt, A, B, C, D, z, has_z, p, chunk, nblk, ckpt, dy, dlast, dx, ddt, dA, dB, dC, dD, dz, dh0):
    """Reverse-time adjoint G (N, ec) per work item; dB, dC (W, T, N) partial per work item; ddt zero on entry."""
    nb, nt, ne = x.shape
    ng, n = B.shape[2], B.shape[3]
    for w in prange(nb * ng * nblk):
        b, gi, e0, ec = _work_item(w, nb, ng, nblk, ne // ng, p)
        hm = np.empty(ec, np.int64)
        G, S = np.empty((n, ec), x.dtype), np.empty((chunk + 1, n, ec), x.dtype)
        qT, dxT, ypT = np.empty((chunk, ec), x.dtype), np.empty((chunk, ec), x.dtype), np.empty((chunk, ec), x.dtype)
        gy, gdx, gq = np.empty(ec, x.dtype), np.empty(ec, x.dtype), np.empty(ec, x.dtype)
        dAl, dDl = np.zeros(ec, x.dtype), np.zeros(ec, x.dtype)
        for c in range(ec):
            hm[c] = (e0 + c) // p
            G[:, c] = dlast[b, e0 + c]
        for k in range((nt + chunk - 1) // chunk - 1, -1, -1):
            lo = k * chunk
            L = min(nt, lo + chunk) - lo
            S[0] = ckpt[b, k, :, e0:e0 + ec]
            for j in range(L):  # recompute the chunk's states, decays and pre-gate outputs
                _ssd_step_in(dt, x, A, b, lo + j, e0, hm, qT[j], dxT[j])
                ypT[j, :] = 0
                for i in range(n):
                    bi, ci = B[b, lo + j, gi, i], C[b, lo + j, gi, i]
                    for c in range(ec):
                        sv = qT[j, c] * S[j, i, c] + bi * dxT[j, c]
                        S[j + 1, i, c] = sv
                        ypT[j, c] += ci * sv
            for j in range(L - 1, -1, -1):
                t = lo + j
                xr, dyr = x[b, t], dy[b, t]
                for c in range(ec):  # through the gate and the skip
                    g = dyr[e0 + c]
                    if has_z:
                        zt = z[b, t, e0 + c]
                        sg = sigmoid(zt)
                        dz[b, t, e0 + c] = g * (ypT[j, c] + D[e0 + c] * xr[e0 + c]) * sg * (_ONE + zt * (_ONE - sg))
                        g = g * zt * sg
                    gy[c] = g
                    dDl[c] += g * xr[e0 + c]
                gdx[:] = 0
                gq[:] = 0
                for i in range(n):  # y = C.S ;  S_t = q S_{t-1} + B (dt x)
                    bi, ci = B[b, t, gi, i], C[b, t, gi, i]
                    sC, sB = zero(bi), zero(bi)
                    for c in range(ec):
                        sC += gy[c] * S[j + 1, i, c]
                        g = G[i, c] + ci * gy[c]
                        sB += g * dxT[j, c]
                        gdx[c] += g * bi
                        gq[c] += g * S[j, i, c]
                        G[i, c] = g * qT[j, c]
                    dC[w, t, i] = sC
                    dB[w, t, i] = sB
                for c in range(ec):  # dt enters through dt x and through exp(dt A); heads are whole in a block
                    d = dt[b, t, hm[c]]
                    dx[b, t, e0 + c] = gdx[c] * d + gy[c] * D[e0 + c]
                    gqa = gq[c] * qT[j, c]
                    ddt[b, t, hm[c]] += gdx[c] * xr[e0 + c] + gqa * A[hm[c]]
                    dAl[c] += gqa * d
        for c in range(ec):
            dh0[b, e0 + c, :] = G[:, c]
            dA[b, e0 + c] = dAl[c]
            dD[b, e0 + c] = dDl[c]


class _SSDFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, h0, chunk):
        bsz, t, h, p = x.shape
        n = B.shape[3]
        x2 = x.view(bsz, t, h * p)  # (B', T, E)
        Dv = x.new_zeros(h * p) if D is None else (D[:, None] if D.dim() == 1 else D).expand(h, p).reshape(h * p).contiguous()
        zz = x.new_zeros(1, 1, 1) if z is None else z.view(bsz, t, h * p)
        hh = x.new_zeros(1, 1, 1) if h0 is None else h0.reshape(bsz, h * p, n)
        y, last = torch.empty_like(x2), x.new_empty(bsz, h * p, n)
        ckpt = x.new_empty(bsz, -(-t // chunk), n, h * p)  # (B', ceil(T/L), N, E)
        nblk = _blocks(bsz * B.shape[2], h // B.shape[2], _threads())
        _ssd_fwd(_np(x2), _np(dt), _np(A), _np(B), _np(C), _np(Dv), _np(zz), _np(hh), z is not None, h0 is not None,
                 p, chunk, nblk, _np(y), _np(last), _np(ckpt))
        ctx.save_for_backward(x2, dt, A, B, C, Dv, zz, ckpt)
        ctx.meta = (chunk, nblk, p, z is not None, None if D is None else D.shape)
        return y.view(bsz, t, h, p), last.view(bsz, h, p, n)

    @staticmethod
    def backward(ctx, dy, dlast):
        x2, dt, A, B, C, Dv, zz, ckpt = ctx.saved_tensors
        chunk, nblk, p, has_z, d_shape = ctx.meta
        bsz, t, e = x2.shape
        g, n = B.shape[2], B.shape[3]
        dy = torch.zeros_like(x2) if dy is None else dy.reshape(bsz, t, e).contiguous()
        dlast = x2.new_zeros(bsz, e, n) if dlast is None else dlast.reshape(bsz, e, n).contiguous()
        dx, ddt, dz = torch.empty_like(x2), torch.zeros_like(dt), torch.empty_like(x2) if has_z else x2.new_empty(1, 1, 1)
        dA, dD, dh0 = x2.new_empty(bsz, e), x2.new_empty(bsz, e), torch.empty_like(dlast)
        dB, dC = x2.new_empty(bsz * g * nblk, t, n), x2.new_empty(bsz * g * nblk, t, n)  # (W, T, N)
        _threads()
        _ssd_bwd(_np(x2), _np(dt), _np(A), _np(B), _np(C), _np(Dv), _np(zz), has_z, p, chunk, nblk, _np(ckpt),
                 _np(dy), _np(dlast), _np(dx), _np(ddt), _np(dA), _np(dB), _np(dC), _np(dD), _np(dz), _np(dh0))
        h = e // p
        dB, dC = (v.view(bsz, g, nblk, t, n).sum(2).transpose(1, 2) for v in (dB, dC))  # (B', T, G, N)
        dD = None if d_shape is None else dD.sum(0).view(h, p).sum(-1) if len(d_shape) == 1 else dD.sum(0).view(h, p)
        grads = (dx.view(bsz, t, h, p), ddt, dA.sum(0).view(h, p).sum(-1), dB, dC, dD,
                 dz.view(bsz, t, h, p) if has_z else None, dh0.view(bsz, h, p, n))
        return tuple(gr if need else None for gr, need in zip(grads, ctx.needs_input_grad)) + (None,)


def fused_ssd_scan(x, dt, A, B, C, D=None, z=None, initial_state=None, chunk_size=None):
    """Mamba2 scan with skip and gate fused. x, z (B', T, H, P); dt (B', T, H) final (bias and softplus applied);
    A (H,); B, C (B', T, G, N) grouped; D (H,) or (H, P); initial_state (B', H, P, N).
    Returns y (B', T, H, P) = (C.h + D x) * silu(z) and the final state (B', H, P, N); chunk_size: checkpoint interval.
    """
    L, cast = _setup(x, "x", chunk_size, "chunk_size")
    y, last = _SSDFn.apply(*map(cast, (x, dt, A, B, C, D, z, initial_state)), L)
    return y.to(x.dtype), last.to(x.dtype)
