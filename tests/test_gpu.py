"""CUDA paths (run with `python -m pytest -m gpu tests/test_gpu.py`; skipped without a CUDA device): the scans on
CUDA against the reference (values, final state, every gradient), mamba_ssm's kernels when installed, and a model's
training step under autocast bf16 / fp16."""

import pytest
import torch

from slotssm.models import build_model
from slotssm.ssm import selective_scan, ssd_scan
from slotssm.ssm.kernels import has_mamba_ssm

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def ss_inputs(bsz=3, e=8, n=4, t=37, device="cuda", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    cpu = dict(u=r(bsz, e, t), delta=0.5 * r(bsz, e, t), A=-torch.rand(e, n, generator=g, dtype=dtype) - 0.1,
               B=r(bsz, n, t), C=r(bsz, n, t), D=r(e), z=r(bsz, e, t), delta_bias=0.3 * r(e))
    return {k: v.to(device) for k, v in cpu.items()}


def ssd_inputs(bsz=2, t=37, h=4, p=8, g=2, n=8, device="cuda"):
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    cpu = dict(x=r(bsz, t, h, p), dt=0.5 * r(bsz, t, h), A=-torch.rand(h, generator=gen) - 0.1,
               B=r(bsz, t, g, n), C=r(bsz, t, g, n), D=r(h), z=r(bsz, t, h, p), dt_bias=0.3 * r(h))
    return {k: v.to(device) for k, v in cpu.items()}


def value_and_grads(fn, inp, softplus_key):
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    y = fn(**leaves, **{softplus_key: True})
    w = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    grads = torch.autograd.grad((y * w).sum(), list(leaves.values()))
    return [y.detach(), *grads]


def assert_all_close(got, want, rel):
    for a, b in zip(got, want):
        assert (a - b).abs().max() <= rel * b.abs().max().clamp(min=1e-6)


@pytest.mark.parametrize("impl", ["chunked"] + (["cuda"] if has_mamba_ssm() else []))
def test_selective_scan_on_cuda_matches_ref(impl):
    inp = ss_inputs()
    ref = value_and_grads(lambda **k: selective_scan(**k, impl="ref"), inp, "delta_softplus")
    fast = value_and_grads(lambda **k: selective_scan(**k, impl=impl, chunk=8 if impl == "chunked" else None), inp,
                           "delta_softplus")
    assert_all_close(fast, ref, 1e-4 if impl == "chunked" else 2e-3)


@pytest.mark.parametrize("impl", ["chunked"] + (["cuda"] if has_mamba_ssm() else []))
def test_ssd_scan_on_cuda_matches_ref(impl):
    inp = ssd_inputs()
    ref = value_and_grads(lambda **k: ssd_scan(**k, impl="ref", chunk_size=8), inp, "dt_softplus")
    fast = value_and_grads(lambda **k: ssd_scan(**k, impl=impl, chunk_size=8), inp, "dt_softplus")
    assert_all_close(fast, ref, 1e-4 if impl == "chunked" else 2e-3)


def test_chunked_on_cuda_matches_cpu_float64():
    inp = ss_inputs()
    y = selective_scan(**inp, delta_softplus=True, impl="chunked")
    ref = selective_scan(**{k: v.cpu().double() for k, v in inp.items()}, delta_softplus=True, impl="ref")
    assert (y.cpu().double() - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["slotssm", "oc_slotssm", "single_state_ssm"])
def test_model_training_step_under_autocast(name, amp):
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    x = torch.randn(2, 5, 4, model.input_dim, device="cuda")
    with torch.autocast("cuda", dtype=amp):
        loss = model(x).slots.float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
