"""ssd_scan: the chunked SSD against the reference loop."""

import pytest
import torch

from slotssm.ssm import available, ssd_scan

FAST = [i for i in ("chunked", "fused") if i in available("ssd_scan", torch.device("cpu"))]
CHUNK = 8


def make_inputs(bsz=2, t=13, h=4, p=3, g=2, n=5, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return dict(
        x=r(bsz, t, h, p), dt=0.5 * r(bsz, t, h), A=-torch.rand(h, generator=gen, dtype=dtype) * 3 - 0.1,
        B=r(bsz, t, g, n), C=r(bsz, t, g, n), D=r(h), z=r(bsz, t, h, p), dt_bias=0.3 * r(h),
        initial_state=r(bsz, h, p, n),
    )


def run(impl, inp, use):
    args = {k: v.clone().requires_grad_() for k, v in inp.items() if k in use}
    y, last = ssd_scan(**args, dt_softplus=True, return_final_state=True, chunk_size=CHUNK, impl=impl)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    grads = torch.autograd.grad((y * w).sum() + (last**2).sum(), list(args.values()))
    return y, last, dict(zip(args, grads))


FULL = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("t", [1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
@pytest.mark.parametrize("use", [FULL[:5], FULL], ids=["plain", "full"])
def test_fast_matches_ref(impl, t, use):
    inp = make_inputs(t=t)
    ref, fast = run("ref", inp, use), run(impl, inp, use)
    for a, b in ((ref[0], fast[0]), (ref[1], fast[1])):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    for k in ref[2]:
        assert (ref[2][k] - fast[2][k]).abs().max() <= 1e-5 * ref[2][k].abs().max().clamp(min=1e-6), k


@pytest.mark.parametrize("impl", ["ref"] + FAST)
def test_gradcheck_fp64(impl):
    inp = make_inputs(bsz=1, t=5, h=2, p=2, g=1, n=2, dtype=torch.float64)

    def f(*xs):
        return ssd_scan(**dict(zip(FULL, xs)), dt_softplus=True, return_final_state=True, chunk_size=2, impl=impl)

    assert torch.autograd.gradcheck(f, [inp[k].clone().requires_grad_() for k in FULL])


def test_continuation_and_per_channel_D():
    inp = make_inputs(t=20)
    inp.pop("initial_state")
    inp["dt"], inp["dt_bias"] = inp["dt"].abs(), inp["dt_bias"].abs()  # no dt_softplus: steps must be >= 0
    inp["D"] = torch.randn(4, 3)
    y, last = ssd_scan(**inp, return_final_state=True, chunk_size=CHUNK)
    sl = lambda d, s: {k: (v[:, s] if k in ("x", "dt", "B", "C", "z") else v) for k, v in d.items()}  # noqa: E731
    y1, s1 = ssd_scan(**sl(inp, slice(0, 11)), return_final_state=True, chunk_size=CHUNK)
    y2, s2 = ssd_scan(**sl(inp, slice(11, None)), initial_state=s1, return_final_state=True, chunk_size=CHUNK)
    close = lambda a, b: (a - b).abs().max() <= 1e-5 * b.abs().max()  # noqa: E731
    assert close(torch.cat([y1, y2], 1), y) and close(s2, last)
    assert close(y, ssd_scan(**inp, impl="ref"))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(x=torch.randn(2, 13, 4)), r"x: expected shape \(B', T, H, P\)"),
        (dict(dt=torch.randn(2, 13, 3)), r"dt: expected shape \(B', T, H\) = \(2, 13, 4\), got \(2, 13, 3\)"),
        (dict(A=torch.randn(4, 1)), r"A: expected shape \(H,\)"),
        (dict(B=torch.randn(2, 13, 3, 5), C=torch.randn(2, 13, 3, 5)), r"B: expected shape .* divisible by G"),
        (dict(initial_state=torch.randn(2, 4, 3)), r"initial_state: expected shape \(B', H, P, N\)"),
        (dict(D=torch.randn(3)), r"D: expected shape \(H,\)"),
    ],
)
def test_bad_arguments_name_the_argument(change, match):
    with pytest.raises(ValueError, match=match):
        ssd_scan(**{**make_inputs(), **change})
