"""The fused kernels' scalar math, typed per dtype: float32 constants stay float32, so nothing is promoted to
float64.

exp: float32 uses a polynomial exp that LLVM vectorises (`fast_exp`, range reduction + degree-6 minimax, ~1 ulp);
float64 calls libm. numba without SVML (the pip llvmlite is not SVML-patched) would otherwise call the scalar expf
once per element. `softplus`, `sigmoid` and `zero` follow the same split. In Python they are the plain formulas;
in numba code the `overload`s below replace them. `map_array` runs them over an array (tests, benchmarks).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from slotssm.ssm.fused.common import _jit


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
