"""Every scan implementation x every bad input: the error type, and a message naming the argument.

Also the defined results: batch 0 gives empty outputs, float16/bfloat16 activations with float32 parameters are
computed in float32 and returned in the activations' dtype, and NaN propagates (torch's behaviour, documented).
"""

import pytest
import torch

from slotssm.ssm import available, selective_scan, ssd_scan

CPU = torch.device("cpu")
SS_IMPLS = available("selective_scan", CPU)
SSD_IMPLS = available("ssd_scan", CPU)


def ss_inputs(bsz=2, e=4, n=3, t=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(bsz, e, t), delta=r(bsz, e, t).abs(), A=-torch.rand(e, n, generator=g, dtype=dtype) - 0.1,
                B=r(bsz, n, t), C=r(bsz, n, t), D=r(e), z=r(bsz, e, t), delta_bias=r(e).abs(),
                initial_state=r(bsz, e, n))


def ssd_inputs(bsz=2, t=5, h=4, p=2, g=2, n=3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return dict(x=r(bsz, t, h, p), dt=r(bsz, t, h).abs(), A=-torch.rand(h, generator=gen, dtype=dtype) - 0.1,
                B=r(bsz, t, g, n), C=r(bsz, t, g, n), D=r(h), z=r(bsz, t, h, p), dt_bias=r(h).abs(),
                initial_state=r(bsz, h, p, n))


f64 = lambda v: v.double()  # noqa: E731
# (case id, change to the inputs (dict or function of them), extra keyword arguments, error type, words in the message)
SS_CASES = [
    ("u_not_tensor", dict(u=[[1.0]]), {}, TypeError, ["u", "torch.Tensor"]),
    ("u_int", lambda d: dict(u=d["u"].long()), {}, ValueError, ["u", "floating-point"]),
    ("u_rank", dict(u=torch.randn(2, 4)), {}, ValueError, ["u", "(B', E, T)"]),
    ("u_empty_time", lambda d: {k: (v[..., :0] if k in ("u", "delta", "B", "C", "z") else v) for k, v in d.items()},
     {}, ValueError, ["u", "T must be >= 1"]),
    ("delta_shape", dict(delta=torch.rand(2, 4, 3)), {}, ValueError, ["delta", "(B', E, T)"]),
    ("A_shape", dict(A=-torch.rand(3, 3)), {}, ValueError, ["A", "(E=4, N)"]),
    ("B_shape", dict(B=torch.randn(2, 3, 4)), {}, ValueError, ["B", "(B', N, T)"]),
    ("C_groups", dict(C=torch.randn(2, 3, 3, 5)), {}, ValueError, ["C", "divisible by G"]),
    ("B_C_grouping", dict(B=torch.randn(2, 2, 3, 5), C=torch.randn(2, 1, 3, 5)), {}, ValueError, ["B and C"]),
    ("D_shape", dict(D=torch.randn(5)), {}, ValueError, ["D", "(E,)"]),
    ("D_int", dict(D=torch.ones(4, dtype=torch.long)), {}, ValueError, ["D", "floating-point"]),
    ("delta_bias_shape", dict(delta_bias=torch.rand(2)), {}, ValueError, ["delta_bias", "(E,)"]),
    ("z_shape", dict(z=torch.randn(2, 4, 4)), {}, ValueError, ["z", "(B', E, T)"]),
    ("initial_state_shape", dict(initial_state=torch.randn(1, 4, 3)), {}, ValueError, ["initial_state", "(B', E, N)"]),
    ("A_float64", lambda d: dict(A=f64(d["A"])), {}, ValueError, ["A", "u's torch.float32", "float64"]),
    ("delta_float64", lambda d: dict(delta=f64(d["delta"])), {}, ValueError, ["delta", "u's"]),
    ("u_float64", lambda d: dict(u=f64(d["u"])), {}, ValueError, ["delta", "u's torch.float64"]),
    ("B_float16", lambda d: dict(B=d["B"].half()), {}, ValueError, ["B", "u's"]),
    ("z_float64", lambda d: dict(z=f64(d["z"])), {}, ValueError, ["z", "u's"]),
    ("initial_state_float64", lambda d: dict(initial_state=f64(d["initial_state"])), {}, ValueError,
     ["initial_state", "u's"]),
    ("A_positive", lambda d: dict(A=d["A"].abs()), {}, ValueError, ["A", "<= 0"]),
    ("delta_negative", lambda d: dict(delta=-d["delta"]), {}, ValueError, ["delta", "delta_softplus", ">= 0"]),
    ("delta_bias_negative", lambda d: dict(delta_bias=-d["delta_bias"] - 5), {}, ValueError,
     ["delta", "delta_bias", ">= 0"]),
    ("chunk_zero", {}, dict(chunk=0), ValueError, ["chunk", "positive"]),
    ("impl_unknown", {}, dict(impl="nope"), ValueError, ["impl", "expected one of"]),
]

SSD_CASES = [
    ("x_not_tensor", dict(x=1.0), {}, TypeError, ["x", "torch.Tensor"]),
    ("x_int", lambda d: dict(x=d["x"].long()), {}, ValueError, ["x", "floating-point"]),
    ("x_rank", dict(x=torch.randn(2, 5, 4)), {}, ValueError, ["x", "(B', T, H, P)"]),
    ("x_empty_time", lambda d: {k: (v[:, :0] if k in ("x", "dt", "B", "C", "z") else v) for k, v in d.items()},
     {}, ValueError, ["x", "T must be >= 1"]),
    ("dt_shape", dict(dt=torch.rand(2, 5, 3)), {}, ValueError, ["dt", "(B', T, H)"]),
    ("A_shape", dict(A=-torch.rand(4, 1)), {}, ValueError, ["A", "(H,)"]),
    ("B_groups", dict(B=torch.randn(2, 5, 3, 3), C=torch.randn(2, 5, 3, 3)), {}, ValueError, ["B", "divisible by G"]),
    ("B_C_shape", dict(C=torch.randn(2, 5, 1, 3)), {}, ValueError, ["B and C"]),
    ("D_shape", dict(D=torch.randn(3)), {}, ValueError, ["D", "(H,)"]),
    ("D_not_tensor", dict(D=2.0), {}, TypeError, ["D", "torch.Tensor"]),
    ("z_shape", dict(z=torch.randn(2, 5, 4, 3)), {}, ValueError, ["z", "(B', T, H, P)"]),
    ("dt_bias_shape", dict(dt_bias=torch.rand(2)), {}, ValueError, ["dt_bias", "(H,)"]),
    ("initial_state_shape", dict(initial_state=torch.randn(2, 4, 2)), {}, ValueError, ["initial_state", "(B', H, P, N)"]),
    ("A_float64", lambda d: dict(A=f64(d["A"])), {}, ValueError, ["A", "x's torch.float32", "float64"]),
    ("dt_float64", lambda d: dict(dt=f64(d["dt"])), {}, ValueError, ["dt", "x's"]),
    ("x_float64", lambda d: dict(x=f64(d["x"])), {}, ValueError, ["dt", "x's torch.float64"]),
    ("C_bfloat16", lambda d: dict(B=d["B"].bfloat16(), C=d["C"].bfloat16()), {}, ValueError, ["B", "x's"]),
    ("dt_bias_float64", lambda d: dict(dt_bias=f64(d["dt_bias"])), {}, ValueError, ["dt_bias", "x's"]),
    ("A_positive", lambda d: dict(A=d["A"].abs()), {}, ValueError, ["A", "<= 0"]),
    ("dt_negative", lambda d: dict(dt=-d["dt"]), {}, ValueError, ["dt", "dt_softplus", ">= 0"]),
    ("chunk_size_zero", {}, dict(chunk_size=0), ValueError, ["chunk_size", "positive"]),
    ("impl_unknown", {}, dict(impl="nope"), ValueError, ["impl", "expected one of"]),
]


def _apply(inputs, change):
    return {**inputs, **(change(inputs) if callable(change) else change)}


def _assert_clear(fn, kind, words):
    with pytest.raises(kind) as info:
        fn()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


@pytest.mark.parametrize("impl", SS_IMPLS)
@pytest.mark.parametrize("case, change, kwargs, kind, words", SS_CASES, ids=[c[0] for c in SS_CASES])
def test_selective_scan_bad_input(impl, case, change, kwargs, kind, words):
    inp = _apply(ss_inputs(), change)
    _assert_clear(lambda: selective_scan(**inp, **{"impl": impl, **kwargs}), kind, words)


@pytest.mark.parametrize("impl", SSD_IMPLS)
@pytest.mark.parametrize("case, change, kwargs, kind, words", SSD_CASES, ids=[c[0] for c in SSD_CASES])
def test_ssd_scan_bad_input(impl, case, change, kwargs, kind, words):
    inp = _apply(ssd_inputs(), change)
    _assert_clear(lambda: ssd_scan(**inp, **{"impl": impl, **kwargs}), kind, words)


@pytest.mark.parametrize("impl", SS_IMPLS)
def test_selective_scan_batch_zero_is_empty(impl):
    inp = {k: v.requires_grad_() for k, v in ss_inputs(bsz=0).items()}
    y, last = selective_scan(**inp, delta_softplus=True, return_last_state=True, impl=impl)
    assert y.shape == (0, 4, 5) and last.shape == (0, 4, 3)
    (y.sum() + last.sum()).backward()
    assert inp["A"].grad is not None and (inp["A"].grad == 0).all()


@pytest.mark.parametrize("impl", SSD_IMPLS)
def test_ssd_scan_batch_zero_is_empty(impl):
    inp = ssd_inputs(bsz=0)
    y, last = ssd_scan(**inp, dt_softplus=True, return_final_state=True, impl=impl)
    assert y.shape == (0, 5, 4, 2) and last.shape == (0, 4, 2, 3)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", SS_IMPLS)
def test_selective_scan_half_activations_float32_parameters(impl, low):
    inp = ss_inputs()
    acts = ("u", "delta", "B", "C", "z")
    mixed = {k: (v.to(low) if k in acts else v) for k, v in inp.items()}  # A, D, bias, state stay float32
    y, last = selective_scan(**mixed, delta_softplus=True, return_last_state=True, impl=impl)
    assert y.dtype == low and last.dtype == low
    ref_in = {k: v.float() for k, v in mixed.items()}
    y_ref = selective_scan(**ref_in, delta_softplus=True, impl="ref")
    torch.testing.assert_close(y.float(), y_ref, rtol=2e-2, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast too: same dtypes in, same dtype out
        assert selective_scan(**mixed, delta_softplus=True, impl=impl).dtype == low


@pytest.mark.parametrize("impl", SSD_IMPLS)
def test_ssd_scan_half_activations_float32_parameters(impl):
    inp = ssd_inputs()
    mixed = {k: (v.bfloat16() if k in ("x", "dt", "B", "C", "z") else v) for k, v in inp.items()}
    y, last = ssd_scan(**mixed, dt_softplus=True, return_final_state=True, chunk_size=2, impl=impl)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.bfloat16
    y_ref = ssd_scan(**{k: v.float() for k, v in mixed.items()}, dt_softplus=True, impl="ref")
    torch.testing.assert_close(y.float(), y_ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("impl", SS_IMPLS)
def test_nan_propagates(impl):
    """Documented: NaN in the inputs is not checked; it reaches the outputs as in any torch op."""
    inp = ss_inputs()
    inp["u"][0, 0, 2] = float("nan")
    y = selective_scan(**inp, delta_softplus=True, impl=impl)
    assert torch.isnan(y[0, 0, 2:]).all() and torch.isfinite(y[1]).all()
