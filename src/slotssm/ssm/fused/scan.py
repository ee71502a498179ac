"""Mamba1 fused kernels (`fused_selective_scan`): per (batch, channel), one pass over time, h in R^N held locally.

Legend: B' batch (batch x slots for SlotSSM), E expanded SSM channels, N state size, T time, G groups of B/C,
L checkpoint interval (`chunk`), W work items of the backward (batch x group x channel block).

    dt_t = softplus(delta_t + delta_bias)                        (each optional)
    h_t  = exp(dt_t A) * h_{t-1} + dt_t u_t B_t ;  y_t = (C_t . h_t + D u_t) * silu(z_t)

y is written once; the state is stored only every L steps (checkpoints). The backward runs the reverse-time adjoint
recurrence (the math of `scan._LoopScan.backward`), recomputing each chunk's L states from its checkpoint, and
returns the gradients of u, delta, A, B, C, D, z, delta_bias (softplus included) and the initial state. Gradients
that sum over channels (B, C) are accumulated by work items that own a (batch, group, channel block): no two
threads write the same element; A, D and delta_bias get per-(batch, channel) partials summed by torch.

Global layouts: u, delta, z, y (B', E, T); A (E, N); Bt, Ct (B', G, T, N); D, bias (E,); h0, last (B', E, N);
ckpt (B', E, ceil(T/L), N). Absent D / bias are zeros, absent z / h0 are never read (flags).
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from slotssm.ssm.fused.common import _FM, _blocks, _jit, _np, _setup, _threads, _work_item
from slotssm.ssm.fused.math32 import _ONE, fast_exp, sigmoid, softplus, zero

FWD_BLOCK = 256  # forward block: rows of 1 KiB (float32) per channel keep the hardware prefetchers busy


@intrinsic
def _prefetch(typingctx, arr, i):
    """Hint the cache line of 1-D arr[i] in (llvm.prefetch: read, high locality); no effect on results."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, i), codegen


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _load_dt(delta, u, bias, sp, b, e0, lo, L, row, dtT, dtuT):
    """dtT[j, c] = softplus?(delta + bias), dtuT = dt * u for steps lo..lo+L of channels e0.. (L, ec).
    Computed along contiguous rows (vectorised), then transposed by plain strided copies."""
    for c in range(dtT.shape[1]):
        db, ub, bc = delta[b, e0 + c], u[b, e0 + c], bias[e0 + c]
        if sp:
            for j in range(L):
                row[j] = softplus(db[lo + j] + bc)
        else:
            for j in range(L):
                row[j] = db[lo + j] + bc
        for j in range(L):
            dtT[j, c] = row[j]
            dtuT[j, c] = row[j] * ub[lo + j]


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _prefetch_rows(arr, b, e0, ec, lo, hi):
    """Prefetch arr[b, e0:e0+ec, lo:hi] (the next chunk's short rows, which the hardware prefetchers miss)."""
    if lo < hi:
        step = max(1, 64 // arr.itemsize)
        for c in range(ec):
            row = arr[b, e0 + c]
            for t in range(lo, hi, step):
                _prefetch(row, t)
            _prefetch(row, hi - 1)


@_jit
def _ss_fwd(u, delta, A, Bt, Ct, D, z, bias, h0, has_z, sp, has_h0, chunk, nblk, y, last, ckpt):
    """Forward over blocks of `blk` steps (a multiple of the checkpoint interval `chunk`): long contiguous row reads
    and writes of u, delta, z, y per block, a checkpoint every `chunk` steps."""
    nb, ne, nt = u.shape
    ng, n = Bt.shape[1], A.shape[1]
    blk = chunk * max(1, FWD_BLOCK // chunk)
    for w in prange(nb * ng * nblk):
        b, gi, e0, ec = _work_item(w, nb, ng, nblk, ne // ng)
        Bb, Cb = Bt[b, gi], Ct[b, gi]
        a, h = np.empty((n, ec), u.dtype), np.empty((n, ec), u.dtype)
        dtT, dtuT, yT = np.empty((blk, ec), u.dtype), np.empty((blk, ec), u.dtype), np.empty((blk, ec), u.dtype)
        row = np.empty(blk, u.dtype)
        for c in range(ec):
            for i in range(n):
                a[i, c] = A[e0 + c, i]
                h[i, c] = h0[b, e0 + c, i] if has_h0 else zero(a[i, c])
        for lo in range(0, nt, blk):
            L = min(nt, lo + blk) - lo
            _load_dt(delta, u, bias, sp, b, e0, lo, L, row, dtT, dtuT)
            for arr in (delta, u, y):  # the next block's rows, fetched while this block is scanned
                _prefetch_rows(arr, b, e0, ec, lo + L, min(nt, lo + L + blk))
            if has_z:
                _prefetch_rows(z, b, e0, ec, lo + L, min(nt, lo + L + blk))
            for j in range(L):  # h = exp(dt A) h + dt u B ;  y = C.h   (vectorised over the ec channels)
                if j % chunk == 0:
                    for c in range(ec):
                        ckpt[b, e0 + c, (lo + j) // chunk, :] = h[:, c]
                yT[j, :] = 0
                for i in range(n):
                    bi, ci = Bb[lo + j, i], Cb[lo + j, i]
                    for c in range(ec):
                        hv = fast_exp(dtT[j, c] * a[i, c]) * h[i, c] + dtuT[j, c] * bi
                        h[i, c] = hv
                        yT[j, c] += ci * hv
            for c in range(ec):  # y = (C.h + D u) * silu(z), written once
                yb, ub, dv = y[b, e0 + c], u[b, e0 + c], D[e0 + c]
                for j in range(L):
                    row[j] = yT[j, c]
                if has_z:
                    zb = z[b, e0 + c]
                    for j in range(L):
                        zt = zb[lo + j]
                        yb[lo + j] = (row[j] + dv * ub[lo + j]) * zt * sigmoid(zt)
                else:
                    for j in range(L):
                        yb[lo + j] = row[j] + dv * ub[lo + j]
        for c in range(ec):
            last[b, e0 + c, :] = h[:, c]


@_jit
def _ss_bwd(u, delta, A, Bt, Ct, D, z, bias, has_z, sp, chunk, nblk, ckpt, dy, dlast,
            du, ddelta, dz, dA, dBt, dCt, dD, dbias, dh0):
    """Reverse-time adjoint, chunk by chunk from the checkpoints. dBt[w], dCt[w] (T, N) belong to work item w
    (summed over blocks by the caller); dA, dD, dbias, dh0 per (batch, channel)."""
    nb, ne, nt = u.shape
    ng, n = Bt.shape[1], A.shape[1]
    for w in prange(nb * ng * nblk):
        b, gi, e0, ec = _work_item(w, nb, ng, nblk, ne // ng)
        Bb, Cb, dBw, dCw = Bt[b, gi], Ct[b, gi], dBt[w], dCt[w]
        a, gh, dAT = np.empty((n, ec), u.dtype), np.empty((n, ec), u.dtype), np.zeros((n, ec), u.dtype)
        S, dec = np.empty((chunk + 1, n, ec), u.dtype), np.empty((chunk, n, ec), u.dtype)
        dtT, dtuT, gyT = np.empty((chunk, ec), u.dtype), np.empty((chunk, ec), u.dtype), np.empty((chunk, ec), u.dtype)
        ypT, ddtuT, ddtAT = np.empty((chunk, ec), u.dtype), np.empty((chunk, ec), u.dtype), np.empty((chunk, ec), u.dtype)
        dDc, dbc = np.zeros(ec, u.dtype), np.zeros(ec, u.dtype)
        row = np.empty(chunk, u.dtype)
        for c in range(ec):
            for i in range(n):
                a[i, c] = A[e0 + c, i]
                gh[i, c] = dlast[b, e0 + c, i]
        for k in range(ckpt.shape[2] - 1, -1, -1):
            lo = k * chunk
            L = min(nt, lo + chunk) - lo
            _load_dt(delta, u, bias, sp, b, e0, lo, L, row, dtT, dtuT)
            plo = max(0, lo - chunk)  # the rows of the chunk after this one (in reverse time) are fetched meanwhile
            for arr in (delta, u, dy, du, ddelta):
                _prefetch_rows(arr, b, e0, ec, plo, lo)
            if has_z:
                _prefetch_rows(z, b, e0, ec, plo, lo)
                _prefetch_rows(dz, b, e0, ec, plo, lo)
            for c in range(ec):
                S[0, :, c] = ckpt[b, e0 + c, k]
            for j in range(L):  # recompute the chunk: S[j + 1] = h_{lo+j}, dec[j] = exp(dt A) at step lo + j
                ypT[j, :] = 0
                for i in range(n):
                    bi, ci = Bb[lo + j, i], Cb[lo + j, i]
                    for c in range(ec):
                        q = fast_exp(dtT[j, c] * a[i, c])
                        dec[j, i, c] = q
                        hv = q * S[j, i, c] + dtuT[j, c] * bi
                        S[j + 1, i, c] = hv
                        ypT[j, c] += ci * hv
            for c in range(ec):  # through the gate and the skip (along contiguous rows, then transposed)
                dyb, ub, dv, dDe = dy[b, e0 + c], u[b, e0 + c], D[e0 + c], dDc[c]
                if has_z:
                    zb, dzb = z[b, e0 + c], dz[b, e0 + c]
                    for j in range(L):
                        row[j] = ypT[j, c]
                    for j in range(L):
                        t = lo + j
                        s = sigmoid(zb[t])
                        dzb[t] = dyb[t] * (row[j] + dv * ub[t]) * s * (_ONE + zb[t] * (_ONE - s))
                        row[j] = dyb[t] * zb[t] * s
                else:
                    for j in range(L):
                        row[j] = dyb[lo + j]
                for j in range(L):
                    gyT[j, c] = row[j]
                    dDe += row[j] * ub[lo + j]
                dDc[c] = dDe
            ddtuT[:L] = 0
            ddtAT[:L] = 0
            for j in range(L - 1, -1, -1):  # the adjoint: y_t = C_t.h_t, h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t
                for i in range(n):
                    bi, ci = Bb[lo + j, i], Cb[lo + j, i]
                    sC, sB = zero(bi), zero(bi)
                    for c in range(ec):
                        g = gyT[j, c]
                        sC += g * S[j + 1, i, c]
                        ghv = gh[i, c] + g * ci
                        sB += dtuT[j, c] * ghv
                        ddtuT[j, c] += ghv * bi
                        q = ghv * S[j, i, c] * dec[j, i, c]  # d/d(dt A)
                        ddtAT[j, c] += q * a[i, c]
                        dAT[i, c] += q * dtT[j, c]
                        gh[i, c] = ghv * dec[j, i, c]
                    dCw[lo + j, i] += sC
                    dBw[lo + j, i] += sB
            for c in range(ec):  # du, and ddelta through softplus (d softplus(x)/dx = sigmoid(x))
                dub, ddb, ub, dlb = du[b, e0 + c], ddelta[b, e0 + c], u[b, e0 + c], delta[b, e0 + c]
                bc, dv, dbe = bias[e0 + c], D[e0 + c], dbc[c]
                for j in range(L):
                    dub[lo + j] = gyT[j, c] * dv + ddtuT[j, c] * dtT[j, c]
                    row[j] = ddtuT[j, c] * ub[lo + j] + ddtAT[j, c]
                if sp:
                    for j in range(L):
                        row[j] *= sigmoid(dlb[lo + j] + bc)
                for j in range(L):
                    ddb[lo + j] = row[j]
                    dbe += row[j]
                dbc[c] = dbe
        for c in range(ec):
            dA[b, e0 + c, :] = dAT[:, c]
            dh0[b, e0 + c, :] = gh[:, c]
            dD[b, e0 + c] = dDc[c]
            dbias[b, e0 + c] = dbc[c]


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, bias, h0, softplus_, chunk):
        bsz, e, t = u.shape
        n = A.shape[1]
        Bt, Ct = (x.view(bsz, -1, n, t).transpose(-1, -2).contiguous() for x in (B, C))  # (B', G, T, N)
        Dv = torch.zeros(e, dtype=u.dtype) if D is None else D.contiguous()
        bv = torch.zeros(e, dtype=u.dtype) if bias is None else bias.contiguous()
        zz = u.new_zeros(1, 1, 1) if z is None else z.contiguous()
        hh = u.new_zeros(1, 1, 1) if h0 is None else h0.contiguous()
        y, last = torch.empty_like(u), u.new_empty(bsz, e, n)
        ckpt = u.new_empty(bsz, e, -(-t // chunk), n)  # (B', E, ceil(T/L), N)
        nblk = _blocks(bsz * Bt.shape[1], e // Bt.shape[1], _threads())
        _ss_fwd(_np(u), _np(delta), _np(A), _np(Bt), _np(Ct), _np(Dv), _np(zz), _np(bv), _np(hh),
                z is not None, softplus_, h0 is not None, chunk, nblk, _np(y), _np(last), _np(ckpt))
        ctx.save_for_backward(u, delta, A, Bt, Ct, Dv, zz, bv, ckpt)
        ctx.flags = (z is not None, softplus_, chunk, B.shape, D is not None, bias is not None)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, Bt, Ct, Dv, zz, bv, ckpt = ctx.saved_tensors
        has_z, sp, chunk, b_shape, has_D, has_bias = ctx.flags
        bsz, e, t = u.shape
        g, n = Bt.shape[1], A.shape[1]
        nblk = _blocks(bsz * g, e // g, _threads())
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        dlast = u.new_zeros(bsz, e, n) if dlast is None else dlast.contiguous()
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dz = torch.empty_like(u) if has_z else u.new_empty(1, 1, 1)
        dA, dh0 = u.new_empty(bsz, e, n), u.new_empty(bsz, e, n)
        dBt, dCt = u.new_zeros(bsz * g * nblk, t, n), u.new_zeros(bsz * g * nblk, t, n)  # (W, T, N)
        dD, dbias = u.new_empty(bsz, e), u.new_empty(bsz, e)
        _ss_bwd(_np(u), _np(delta), _np(A), _np(Bt), _np(Ct), _np(Dv), _np(zz), _np(bv), has_z, sp, chunk, nblk,
                _np(ckpt), _np(dy), _np(dlast), _np(du), _np(ddelta), _np(dz), _np(dA), _np(dBt), _np(dCt),
                _np(dD), _np(dbias), _np(dh0))
        dB, dC = (x.view(bsz, g, nblk, t, n).sum(2).transpose(-1, -2).reshape(b_shape) for x in (dBt, dCt))
        grads = (du, ddelta, dA.sum(0), dB, dC, dD.sum(0) if has_D else None, dz if has_z else None,
                 dbias.sum(0) if has_bias else None, dh0)
        return tuple(gr if need else None for gr, need in zip(grads, ctx.needs_input_grad)) + (None, None)


def fused_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None, chunk=None):
    """Mamba1 selective scan with bias, softplus, skip and gate fused: `scan.selective_scan`'s arguments, checked.

    u, delta, z (B', E, T); A (E, N); B, C (B', N, T) or (B', G, N, T); D, delta_bias (E,); initial_state (B', E, N).
    Returns y (B', E, T) = (C.h + D u) * silu(z) and the last state (B', E, N). float32 / float64 compute (other
    floating dtypes are computed in float32 and cast back); CPU tensors only; chunk: checkpoint interval L.
    """
    L, cast = _setup(u, "u", chunk, "chunk")
    y, last = _SelectiveScanFn.apply(*map(cast, (u, delta, A, B, C, D, z, delta_bias, initial_state)),
                                     bool(delta_softplus), L)
    return y.to(u.dtype), last.to(u.dtype)
