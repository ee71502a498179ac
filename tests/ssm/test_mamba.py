"""Mamba / Mamba2 blocks: step x T == forward, chunked continuation, mamba_ssm parameter layout."""

import math

import pytest
import torch

from slotssm.ssm import Mamba, Mamba2

BLOCKS = {
    "mamba": lambda: Mamba(16, d_state=8, expand=1.25),
    "mamba_ref": lambda: Mamba(16, d_state=8, expand=1.25, impl="ref"),
    "mamba2": lambda: Mamba2(16, d_state=8, headdim=8, chunk_size=4),
    "mamba2_groups": lambda: Mamba2(16, d_state=4, headdim=4, ngroups=2, chunk_size=4),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_step_equals_forward_and_continuation(name):
    m = BLOCKS[name]()
    x = torch.randn(3, 11, 16)
    y, state = m(x)
    s = m.init_state(3)
    ys = []
    for t in range(11):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.ssm, state.ssm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.conv, state.conv, rtol=1e-5, atol=1e-5)
    y1, s1 = m(x[:, :4])
    y2, _ = m(x[:, 4:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_causal_and_every_parameter_gets_a_gradient(name):
    m = BLOCKS[name]()
    x = torch.randn(2, 9, 16, requires_grad=True)
    y, _ = m(x)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    x2 = x.detach().clone()
    x2[:, 5:] += 1.0
    y2, _ = m(x2)
    torch.testing.assert_close(y2[:, :5], y[:, :5].detach())
    assert not torch.allclose(y2[:, 5:], y[:, 5:].detach())


def test_mamba_parameters_follow_mamba_ssm():
    # mamba_ssm.modules.mamba_simple.Mamba(d_model=64, d_state=16, d_conv=4, expand=2): names and shapes.
    m = Mamba(64, d_state=16, d_conv=4, expand=2)
    e, r = 128, math.ceil(64 / 16)
    expected = {
        "A_log": (e, 16), "D": (e,), "in_proj.weight": (2 * e, 64), "conv1d.weight": (e, 1, 4), "conv1d.bias": (e,),
        "x_proj.weight": (r + 32, e), "dt_proj.weight": (e, r), "dt_proj.bias": (e,), "out_proj.weight": (64, e),
    }
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    # S4D-real A and an inverse-softplus dt bias with softplus(bias) in [dt_min, dt_max].
    torch.testing.assert_close(torch.exp(m.A_log[0]), torch.arange(1, 17, dtype=torch.float32))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6


def test_mamba2_parameters_follow_mamba_ssm():
    # mamba_ssm.modules.mamba2.Mamba2(d_model=64, d_state=16, headdim=32, ngroups=1, expand=2)
    m = Mamba2(64, d_state=16, headdim=32)
    e, h = 128, 4
    conv = e + 2 * 16
    expected = {
        "dt_bias": (h,), "A_log": (h,), "D": (h,), "in_proj.weight": (2 * e + 2 * 16 + h, 64),
        "conv1d.weight": (conv, 1, 4), "conv1d.bias": (conv,), "norm.weight": (e,), "out_proj.weight": (64, e),
    }
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    assert (torch.exp(m.A_log) >= 1).all() and (torch.exp(m.A_log) <= 16).all()


def test_bad_input():
    m = Mamba(16, d_state=4)
    with pytest.raises(ValueError, match=r"x: expected shape \(B', T, D\) with D=16"):
        m(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B', D\)"):
        m.step(torch.randn(2, 1, 16), m.init_state(2))
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, headdim=5)


def test_build_ssm_picks_the_block_by_kind():
    from slotssm.ssm import Mamba, Mamba2, build_ssm

    assert type(build_ssm("mamba", 8, d_state=4)) is Mamba
    assert type(build_ssm("mamba2", 16, d_state=4, headdim=8)) is Mamba2
    with pytest.raises(ValueError, match="kind"):
        build_ssm("s4", 8)


def test_build_ssm_dt_range_sets_the_starting_step_sizes():
    import torch.nn.functional as F

    from slotssm.models import build_model
    from slotssm.ssm import build_ssm

    m = build_ssm("mamba", 64, d_state=4, dt_range=(1e-4, 1e-3))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 1e-3 + 1e-9
    m2 = build_ssm("mamba2", 64, d_state=4, headdim=8, dt_range=(0.05, 0.05))
    torch.testing.assert_close(F.softplus(m2.dt_bias), torch.full((16,), 0.05))
    for bad in [(0.0, 0.1), (0.1, 0.01), (0.1,)]:
        with pytest.raises(ValueError, match="dt_range"):
            build_ssm("mamba", 8, dt_range=bad)
    # The models pass it through to every layer's SSM.
    for name in ("slotssm", "single_state_ssm"):
        model = build_model(name, preset="tiny", dt_range=(1e-4, 2e-4))
        dts = [F.softplus(mod.dt_proj.bias) for mod in model.modules() if hasattr(mod, "dt_proj")]
        assert dts and all(d.max() <= 2e-4 + 1e-9 for d in dts), name
