"""Fused numba kernels: their scalar math, the paths the shared scan tests do not reach (several forward blocks,
channel blocks, grouped B/C with several work items, layouts, dtypes), thread-count independence, the cache fallback.

Only float32 / float64 C-contiguous signatures are used, the ones test_scan.py and test_ssd.py compile anyway.
"""

import numpy as np
import pytest
import torch

from slotssm.ssm import available, selective_scan, ssd_scan

pytestmark = pytest.mark.skipif(
    "fused" not in available("selective_scan", torch.device("cpu")), reason="numba is not installed"
)
fused = pytest.importorskip("slotssm.ssm.fused")
from slotssm.ssm.fused import common  # noqa: E402  (after the skip: numba may be missing)


def ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Distance in float32 ulps (of the exact value)."""
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


def apply(op: int, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    fused.map_array(op, x, out)
    return out


def test_poly_exp_float32_within_two_ulp():
    x = np.concatenate([np.linspace(-87.3, 88.3, 400_001), np.linspace(-1, 1, 100_001)]).astype(np.float32)
    want = np.exp(x.astype(np.float64))
    assert ulps(apply(0, x), want).max() <= 2.0
    special = apply(0, np.array([0.0, -np.inf, np.inf, np.nan, -200.0, 200.0], np.float32))
    assert special[0] == 1.0 and special[1] == 0.0 and special[4] == 0.0
    assert np.isinf(special[2]) and np.isinf(special[5]) and np.isnan(special[3])


def test_softplus_and_sigmoid_float32_accuracy():
    x = np.linspace(-60, 60, 200_001).astype(np.float32)
    x64 = x.astype(np.float64)
    sp = np.logaddexp(0.0, x64)
    sg = 1 / (1 + np.exp(-x64))
    assert ulps(apply(1, x), sp).max() <= 4.0
    assert ulps(apply(2, x), sg).max() <= 4.0
    np.testing.assert_allclose(apply(0, x64), np.exp(x64), rtol=4e-16)  # float64: libm's exp


def scan_inputs(bsz, e, n, t, groups=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    bc = (bsz, n, t) if groups is None else (bsz, groups, n, t)
    return dict(u=r(bsz, e, t), delta=0.5 * r(bsz, e, t), A=-torch.rand(e, n, generator=g, dtype=dtype) - 0.1,
                B=r(*bc), C=r(*bc), D=r(e), z=r(bsz, e, t), delta_bias=0.3 * r(e), initial_state=r(bsz, e, n))


def scan_outputs(impl, inp, **kw):
    args = {k: v.clone().requires_grad_() for k, v in inp.items()}
    y, last = selective_scan(**args, delta_softplus=True, return_last_state=True, impl=impl, **kw)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    grads = torch.autograd.grad((y * w).sum() + (last**2).sum(), list(args.values()))
    return [y, last, *grads]


def assert_all_close(ref, got, rel):
    for i, (a, b) in enumerate(zip(ref, got)):
        assert (a - b).abs().max() <= rel * a.abs().max().clamp(min=1e-6), f"output {i}"


@pytest.mark.parametrize(
    "shape, groups, chunk",
    [
        ((1, 6, 3, 300), None, 16),  # several forward blocks (FWD_BLOCK = 256), one batch: channel blocks
        ((1, 8, 4, 40), 2, 7),  # grouped B/C, several work items per group summed into dB, dC
        ((3, 4, 2, 9), 4, 1),  # one channel per group, a checkpoint every step
        ((2, 5, 3, 6), None, 64),  # chunk longer than T
    ],
)
def test_selective_scan_matches_ref(shape, groups, chunk):
    inp = scan_inputs(*shape, groups=groups, dtype=torch.float64)
    assert_all_close(scan_outputs("ref", inp), scan_outputs("fused", inp, chunk=chunk), 1e-10)


def test_model_layout_and_low_precision_inputs():
    # Mamba's delta and z are (B', T, E) memory seen as (B', E, T); bfloat16 is computed in float32 and cast back.
    inp = scan_inputs(2, 6, 4, 33)
    for k in ("delta", "z"):
        inp[k] = inp[k].transpose(1, 2).contiguous().transpose(1, 2)
        assert not inp[k].is_contiguous()
    assert_all_close(scan_outputs("ref", inp), scan_outputs("fused", inp), 1e-5)
    low = {k: v.bfloat16() for k, v in inp.items()}
    y = selective_scan(**low, delta_softplus=True, impl="fused")
    ref = selective_scan(**{k: v.float() for k, v in low.items()}, delta_softplus=True, impl="ref")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


def test_result_does_not_depend_on_the_thread_count():
    inp = scan_inputs(1, 8, 4, 20, groups=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = scan_outputs("fused", inp)
        torch.set_num_threads(2)
        two = scan_outputs("fused", inp)
    finally:
        torch.set_num_threads(before)
    assert_all_close(one, two, 1e-6)


def ssd_inputs(bsz, t, h, p, g, n, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return dict(x=r(bsz, t, h, p), dt=0.5 * r(bsz, t, h), A=-torch.rand(h, generator=gen, dtype=dtype) - 0.1,
                B=r(bsz, t, g, n), C=r(bsz, t, g, n), D=r(h, p), z=r(bsz, t, h, p), dt_bias=0.3 * r(h),
                initial_state=r(bsz, h, p, n))


@pytest.mark.parametrize("shape, chunk", [((1, 37, 4, 3, 2, 5), 8), ((2, 5, 3, 2, 1, 4), 64)])
def test_ssd_matches_ref_with_head_blocks_and_per_channel_D(shape, chunk):
    inp = ssd_inputs(*shape)

    def outputs(impl):
        args = {k: v.clone().requires_grad_() for k, v in inp.items()}
        y, last = ssd_scan(**args, dt_softplus=True, return_final_state=True, chunk_size=chunk, impl=impl)
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        return [y, last, *torch.autograd.grad((y * w).sum() + (last**2).sum(), list(args.values()))]

    assert_all_close(outputs("ref"), outputs("fused"), 1e-10)


def test_work_items_cover_every_channel_once():
    for items, channels, threads, align in [(1, 80, 2, 1), (1, 80, 2, 16), (48, 80, 2, 1), (2, 6, 4, 3), (1, 7, 2, 1)]:
        nblk = common._blocks(items, channels // align, threads)
        seen = []
        for w in range(items * nblk):
            b, gi, e0, ec = common._work_item(w, items, 1, nblk, channels, align)
            assert e0 % align == 0 and ec % align == 0 and ec > 0
            seen += [(b, e) for e in range(e0, e0 + max(ec, 0))]
        assert sorted(seen) == [(b, e) for b in range(items) for e in range(channels)]


def test_uncacheable_function_compiles_in_memory():
    # A function whose source has no file (as with a read-only install and no writable cache dir) cannot be cached
    # by numba: the decorator must fall back to an in-memory compile instead of raising.
    namespace = {}
    exec(compile("def add_one(x):\n    return x + 1\n", "<generated>", "exec"), namespace)
    kernel = common._jit(namespace["add_one"], parallel=False)
    assert kernel(41) == 42


def test_fused_rejects_non_cpu_and_bad_chunk():
    inp = scan_inputs(1, 2, 2, 3)
    with pytest.raises(ValueError, match="chunk: expected a positive int"):
        fused.fused_selective_scan(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], chunk=0)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="u: the fused kernel needs CPU tensors"):
            fused.fused_selective_scan(*(inp[k].cuda() for k in ("u", "delta", "A", "B", "C")))


@pytest.mark.parametrize("want", [1, 2])
def test_fused_call_leaves_torch_thread_count_alone(want):
    # numba's OpenMP pool shares the OpenMP runtime with torch: a fused call must not change torch's thread count.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(want)
        u = torch.randn(2, 8, 10, requires_grad=True)
        selective_scan(u, u.abs(), -torch.rand(8, 4), torch.randn(2, 4, 10), torch.randn(2, 4, 10),
                       impl="fused").sum().backward()
        ssd_scan(torch.randn(2, 10, 2, 4, requires_grad=True), torch.rand(2, 10, 2), -torch.rand(2), torch.randn(2, 10, 1, 4),
                 torch.randn(2, 10, 1, 4), impl="fused").sum().backward()
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
