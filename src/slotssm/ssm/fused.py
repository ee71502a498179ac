"""Fused CPU scan kernels (numba): the state in a few cache lines, one pass over time, a recomputing adjoint backward.

Legend: B' batch (batch x slots for SlotSSM), E expanded SSM channels, N state size, T time, G groups of B/C,
H heads, P head width, L checkpoint interval (`chunk`), W work items of the backward (batch x group x channel block).

Mamba1 (`fused_selective_scan`), per (batch, channel), one pass over time with h in R^N held locally:

    dt_t = softplus(delta_t + delta_bias)                        (each optional)
    h_t  = exp(dt_t A) * h_{t-1} + dt_t u_t B_t ;  y_t = (C_t . h_t + D u_t) * silu(z_t)

y is written once; the state is stored only every L steps (checkpoints). The backward runs the reverse-time adjoint
recurrence (the math of `scan._LoopScan.backward`), recomputing each chunk's L states from its checkpoint, and
returns the gradients of u, delta, A, B, C, D, z, delta_bias (softplus included) and the initial state. Gradients
that sum over channels (B, C) are accumulated by work items that own a (batch, group, channel block): no two
threads write the same element; A, D and delta_bias get per-(batch, channel) partials summed by torch.

Mamba2 (`fused_ssd_scan`), per (batch, head), h in R^{P x N}: the same scheme with one scalar decay per step.

exp: float32 uses a polynomial exp that LLVM vectorises (`fast_exp`, range reduction + degree-6 minimax, ~1 ulp);
float64 calls libm. numba without SVML (the pip llvmlite is not SVML-patched) would otherwise call the scalar expf
once per element. See docs/kernels.md for the measurements behind every choice here.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

log = logging.getLogger("slotssm.ssm")

FUSED_OPS = ("selective_scan", "ssd_scan")
DEFAULT_CHUNK = 64
FWD_BLOCK = 256  # forward block: rows of 1 KiB (float32) per channel keep the hardware prefetchers busy
_FM = {"contract", "reassoc", "nsz"}  # reassoc lets LLVM vectorise the N-wide reductions


def _jit(fn=None, *, parallel=True):
    """njit with an on-disk cache when one is writable (numba's own locators, then NUMBA_CACHE_DIR); else in memory."""

    def wrap(f):
        try:
            return njit(parallel=parallel, cache=True, fastmath=_FM, error_model="numpy")(f)
        except RuntimeError as err:  # no writable cache location: compile each process instead of crashing
            log.info("slotssm: numba cache unavailable for %s (%s); compiling in memory", f.__name__, err)
            return njit(parallel=parallel, cache=False, fastmath=_FM, error_model="numpy")(f)

    return wrap(fn) if fn is not None else wrap


# ---------------------------------------------------------------------------------------------------------------
# scalar math, typed per dtype (float32 constants stay float32, so nothing is promoted to float64)


@intrinsic
def _pow2(typingctx, k):
    """2**k for an integral float k (exponent bits built directly; k must be a normal exponent)."""
    if k == types.float32:
        ity, fty, bias, shift = ir.IntType(32), ir.FloatType(), 127, 23
    elif k == types.float64:
        ity, fty, bias, shift = ir.IntType(64), ir.DoubleType(), 1023, 52
    else:
        return None

    def codegen(context, builder, sig, args):
        ki = builder.fptosi(args[0], ity)
        bits = builder.shl(builder.add(ki, ir.Constant(ity, bias)), ir.Constant(ity, shift))
        return builder.bitcast(bits, fty)

    return k(k), codegen


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


_F = np.float32
# exp(x) = 2^k exp(r), r = x - k ln2 in [-ln2/2, ln2/2] (Cody-Waite split of ln2), exp(r) by Cephes' expf polynomial.
_E_LO, _E_HI, _L2E, _LN2_HI, _LN2_LO = _F(-87.33654), _F(88.37626), _F(1.44269504), _F(0.693359375), _F(-2.12194440e-4)
_E_P = tuple(_F(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_HALF, _ONE, _TWO, _ZERO, _INF = _F(0.5), _F(1.0), _F(2.0), _F(0.0), _F(np.inf)


@njit(cache=True, fastmath={"contract"}, error_model="numpy")  # no reassoc: it would undo the Cody-Waite range reduction
def _exp32(x):
    x0 = x
    x = _E_HI if x0 > _E_HI else x0  # selects, not min/max: a NaN stays NaN
    x = _E_LO if x < _E_LO else x
    k = np.floor(x * _L2E + _HALF)
    r = x - k * _LN2_HI - k * _LN2_LO
    p = _E_P[0] * r + _E_P[1]
    p = p * r + _E_P[2]
    p = p * r + _E_P[3]
    p = p * r + _E_P[4]
    p = p * r + _E_P[5]
    y = (p * r * r + r + _ONE) * _pow2(k)
    y = _ZERO if x0 < _E_LO else y  # underflow to 0 (denormal results flushed)
    return _INF if x0 > _E_HI else y


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _log1p01_32(w):
    """log(1 + w) for w in [0, 1]: 2 atanh(s), s = w / (2 + w) in [0, 1/3], odd series to s^15."""
    s = w / (_TWO + w)
    s2 = s * s
    p = _F(1 / 15) * s2 + _F(1 / 13)
    p = p * s2 + _F(1 / 11)
    p = p * s2 + _F(1 / 9)
    p = p * s2 + _F(1 / 7)
    p = p * s2 + _F(1 / 5)
    p = p * s2 + _F(1 / 3)
    return _TWO * s * (p * s2 + _ONE)


def fast_exp(x):
    """exp; in numba code: the vectorisable polynomial for float32, libm for float64."""
    return math.exp(x)


def softplus(x):
    """log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|))."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def zero(x):
    """0 of x's type (a bare 0.0 would promote float32 arithmetic to float64)."""
    return 0.0


_EXACT = {"fastmath": {"contract"}, "error_model": "numpy"}


@overload(fast_exp, jit_options=_EXACT)
def _ov_exp(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    return lambda x: math.exp(x)


@overload(softplus, jit_options=_EXACT)
def _ov_softplus(x):
    if x == types.float32:
        return lambda x: (x if x > _ZERO else _ZERO) + _log1p01_32(_exp32(-abs(x)))
    return lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@overload(sigmoid, jit_options=_EXACT)
def _ov_sigmoid(x):
    if x == types.float32:
        return lambda x: _ONE / (_ONE + _exp32(-x))
    return lambda x: 1.0 / (1.0 + math.exp(-x))


@overload(zero)
def _ov_zero(x):
    if x == types.float32:
        return lambda x: _ZERO
    return lambda x: 0.0


@_jit
def map_array(op, x, out):
    """out = f(x) elementwise over flat arrays, f = (fast_exp, softplus, sigmoid)[op]: the kernels' scalar math as
    compiled there (tests of its accuracy, and the benchmark's exp throughput)."""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = fast_exp(v) if op == 0 else softplus(v) if op == 1 else sigmoid(v)


# ---------------------------------------------------------------------------------------------------------------
# Mamba1 kernels. Global layouts: u, delta, z, y (B', E, T); A (E, N); Bt, Ct (B', G, T, N); D, bias (E,);
# h0, last (B', E, N); ckpt (B', E, ceil(T/L), N). Absent D / bias are zeros, absent z / h0 are never read (flags).
# A work item w = (batch, group, channel block) holds its ec channels in the innermost ("lane") axis of local
# buffers: every inner loop runs over ec contiguous channels (long enough to vectorise well), and the reductions
# over channels (y needs none; dB, dC do) stay inside one work item, so no two threads write the same element.


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _work_item(w, nb, ng, nblk, epg, align=1):
    """(batch, group, first channel, channel count) of work item w; blocks are multiples of `align` channels."""
    b, gi, k = w // (ng * nblk), (w // nblk) % ng, w % nblk
    eb = align * -(-(epg // align) // nblk)
    e0 = gi * epg + k * eb
    return b, gi, e0, max(0, min(eb, gi * epg + epg - e0))


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


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy()


@njit(parallel=True, cache=False)
def _touch_pool(out):
    for i in prange(out.shape[0]):
        out[i] = i


_pool_started = False


def _threads() -> int:
    """Follow torch's thread count (the caller's choice), within numba's pool.

    Starting numba's OpenMP pool sets the process-wide OpenMP thread count to numba's maximum, which is also
    torch's: a process that asked torch for 1 thread would silently run its torch ops on all cores from the first
    fused call on (measured: two 1-thread training processes on 2 cores ran 5x slower). The pool is started once,
    here, and torch's count put back.
    """
    global _pool_started
    want = torch.get_num_threads()
    if not _pool_started:
        _touch_pool(np.empty(2 * numba.config.NUMBA_NUM_THREADS, dtype=np.int64))
        _pool_started = True
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
    nt = max(1, min(want, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(nt)
    return nt


def _blocks(items: int, channels: int, threads: int) -> int:
    """Channel blocks per (batch, group): enough work items for every thread, blocks as wide as possible."""
    want = 4 * threads if threads > 1 else 1
    if items >= want:
        return 1
    width = -(-channels // min(channels, -(-want // items)))
    return -(-channels // width)  # no empty block


def _setup(first: torch.Tensor, name: str, chunk, chunk_name: str):
    """Checks shared by the fused ops: CPU tensors and a positive checkpoint interval. Returns the interval and a
    cast to the compute dtype (float32 / float64 as given, other floating dtypes in float32), contiguous."""
    if first.device.type != "cpu":
        raise ValueError(f"{name}: the fused kernel needs CPU tensors, got device {first.device}")
    L = DEFAULT_CHUNK if chunk is None else int(chunk)
    if L < 1:
        raise ValueError(f"{chunk_name}: expected a positive int, got {chunk!r}")
    cdt = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32
    return L, (lambda v: None if v is None else v.to(cdt).contiguous())


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


# ---------------------------------------------------------------------------------------------------------------
# Mamba2 (SSD) kernels. The channels of a group, c = (head, p) over its H/G heads, are the lanes, as for Mamba1:
# x, z, y (B', T, E = H P); dt (B', T, H) final; A (H,); B, C (B', T, G, N) shared by the group's heads; D (E,);
# h0, last (B', E, N); ckpt (B', ceil(T/L), N, E). Blocks of channels hold whole heads (dt's gradient sums over p).


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
