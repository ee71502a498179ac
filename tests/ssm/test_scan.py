"""selective_scan: every fast path against the reference loop (values, last state, every gradient)."""

import pytest
import torch

from slotssm.ssm import available, selective_scan
from slotssm.ssm.kernels import resolve_impl

FAST = [i for i in ("loop", "chunked", "fused") if i in available("selective_scan", torch.device("cpu"))]
CHUNK = 8


def make_inputs(bsz=2, e=6, n=4, t=13, groups=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    bc = (bsz, n, t) if groups is None else (bsz, groups, n, t)
    return dict(
        u=r(bsz, e, t), delta=0.5 * r(bsz, e, t), A=-torch.rand(e, n, generator=g, dtype=dtype) * 2 - 0.1,
        B=r(*bc), C=r(*bc), D=r(e), z=r(bsz, e, t), delta_bias=0.3 * r(e), initial_state=r(bsz, e, n),
    )


def positive_steps(inp):
    """Inputs for delta_softplus=False: without softplus the steps delta + delta_bias must be >= 0."""
    return {**inp, "delta": inp["delta"].abs(), "delta_bias": inp["delta_bias"].abs()}


def run(impl, inp, *, use, softplus=True):
    args = {k: v.clone().requires_grad_() for k, v in inp.items() if k in use}
    y, last = selective_scan(
        **args, delta_softplus=softplus, return_last_state=True, impl=impl, chunk=None if impl == "ref" else CHUNK
    )
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    grads = torch.autograd.grad((y * w).sum() + (last**2).sum(), list(args.values()))
    return y, last, dict(zip(args, grads))


BASE = ("u", "delta", "A", "B", "C")
VARIANTS = {
    "plain": BASE,
    "full": BASE + ("D", "z", "delta_bias", "initial_state"),
    "state_only": BASE + ("initial_state",),
}


def assert_match(ref, fast, rel):
    for a, b, what in ((ref[0], fast[0], "y"), (ref[1], fast[1], "last state")):
        assert (a - b).abs().max() <= rel * a.abs().max(), what
    for k in ref[2]:
        a, b = ref[2][k], fast[2][k]
        assert (a - b).abs().max() <= rel * max(a.abs().max(), 1e-6), f"grad {k}"


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("t", [1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_matches_ref_fp32(impl, t, variant):
    inp = make_inputs(t=t)
    assert_match(run("ref", inp, use=VARIANTS[variant]), run(impl, inp, use=VARIANTS[variant]), 1e-5)


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("groups", [1, 3])
def test_grouped_and_no_softplus_fp64(impl, groups):
    inp = positive_steps(make_inputs(t=19, groups=groups, dtype=torch.float64))
    use = VARIANTS["full"]
    assert_match(run("ref", inp, use=use, softplus=False), run(impl, inp, use=use, softplus=False), 1e-10)


@pytest.mark.parametrize("impl", ["ref"] + FAST)
def test_gradcheck_fp64(impl):
    inp = make_inputs(bsz=1, e=2, n=2, t=5, groups=None, dtype=torch.float64)
    names = list(VARIANTS["full"])

    def f(*xs):
        y, last = selective_scan(**dict(zip(names, xs)), delta_softplus=True, return_last_state=True, impl=impl, chunk=2 if impl != "ref" else None)
        return y, last

    assert torch.autograd.gradcheck(f, [inp[k].clone().requires_grad_() for k in names])


@pytest.mark.parametrize("impl", ["ref"] + FAST)
def test_continuation_from_state(impl):
    inp = positive_steps(make_inputs(t=21))
    inp.pop("initial_state")
    y, last = selective_scan(**inp, return_last_state=True, impl=impl)
    cut = 9
    part = lambda d, sl: {k: (v[..., sl] if v.dim() == 3 and k not in ("A",) else v) for k, v in d.items()}  # noqa: E731
    y1, s1 = selective_scan(**part(inp, slice(0, cut)), return_last_state=True, impl=impl)
    y2, s2 = selective_scan(**part(inp, slice(cut, None)), initial_state=s1, return_last_state=True, impl=impl)
    torch.testing.assert_close(torch.cat([y1, y2], -1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, last, rtol=1e-5, atol=1e-5)


def test_noncontiguous_inputs():
    inp = positive_steps(make_inputs(t=12))
    u_nc = inp["u"].transpose(0, 1).contiguous().transpose(0, 1)
    assert not u_nc.is_contiguous()
    for impl in FAST:
        a = selective_scan(**{**inp, "u": u_nc}, impl=impl)
        b = selective_scan(**inp, impl="ref")
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_long_sequence_is_stable():
    # Strong decays over many steps: no overflow, no NaN (no division by cumulative products anywhere).
    inp = make_inputs(t=300, e=4, n=3)
    inp["delta"] = inp["delta"].abs() * 20
    ref = selective_scan(**inp, delta_softplus=True, impl="ref")
    for impl in FAST:
        out = selective_scan(**inp, delta_softplus=True, impl=impl)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(u=torch.randn(2, 6)), r"u: expected shape \(B', E, T\)"),
        (dict(delta=torch.randn(2, 6, 5)), r"delta: expected shape \(B', E, T\) = \(2, 6, 13\), got \(2, 6, 5\)"),
        (dict(A=torch.randn(5, 4)), r"A: expected shape \(E=6, N\)"),
        (dict(B=torch.randn(2, 4, 13, 1)), r"B: expected shape \(B'=2, G, N=4, T=13\)"),
        (dict(C=torch.randn(2, 3, 13)), r"C: expected shape \(B', N, T\)"),
        (dict(D=torch.randn(5)), r"D: expected shape \(E,\)"),
        (dict(initial_state=torch.randn(2, 6, 3)), r"initial_state: expected shape \(B', E, N\)"),
        (dict(u=torch.ones(2, 6, 13, dtype=torch.long)), r"u: expected a floating-point tensor"),
        (dict(u=torch.randn(2, 6, 0), delta=torch.randn(2, 6, 0)), r"u: the time axis T must be >= 1"),
    ],
)
def test_bad_arguments_name_the_argument(change, match):
    inp = {**make_inputs(), **change}
    with pytest.raises(ValueError, match=match):
        selective_scan(**inp, impl="ref")


def test_impl_resolution():
    with pytest.raises(ValueError, match="impl: expected one of"):
        resolve_impl("selective_scan", "nope", torch.device("cpu"))
    with pytest.raises(ValueError, match="impl='cuda' is not available"):
        selective_scan(**make_inputs(), impl="cuda")
    assert resolve_impl("selective_scan", "auto", torch.device("cpu")) in FAST
