"""Every registered sequence model: shapes, finiteness, gradients, causality, step x T == forward, determinism."""

import pytest
import torch

from slotssm.models import build_model, list_models, model_config, run_steps

MODELS = list_models()


def tiny(name, **kw):
    torch.manual_seed(0)
    return build_model(name, preset="tiny", **kw)


def tokens_for(model, b=2, t=6, m=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, m, model.input_dim, generator=g)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_finite_and_every_parameter_learns(name):
    model = tiny(name)
    x = tokens_for(model)
    out = model(x)
    cfg = model_config(name, "tiny")
    assert out.slots.shape == (2, 6, model.num_slots, model.d_model)
    assert model.d_model == cfg.d_model
    assert torch.isfinite(out.slots).all()
    (out.slots * torch.randn_like(out.slots)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_step_equals_forward_and_chunked_forward(name):
    model = tiny(name).eval()
    x = tokens_for(model, t=7)
    with torch.no_grad():
        full = model(x)
        stepped, state = run_steps(model, x)
        first = model(x[:, :3])
        second = model(x[:, 3:], state=first.state)
    scale = full.slots.abs().max()
    assert (stepped - full.slots).abs().max() <= 1e-5 * scale
    assert (torch.cat([first.slots, second.slots], 1) - full.slots).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("name", MODELS)
def test_causal(name):
    model = tiny(name).eval()
    x = tokens_for(model, t=6)
    x2 = x.clone()
    x2[:, 4] += torch.randn_like(x2[:, 4])
    with torch.no_grad():
        a, b = model(x).slots, model(x2).slots
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4], b[:, 4])


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_output(name):
    x = tokens_for(tiny(name))
    with torch.no_grad():
        assert torch.equal(tiny(name).eval()(x).slots, tiny(name).eval()(x).slots)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda d: torch.randn(2, 6, d), r"tokens: expected shape \(B, T, M, D_in\)"),
        (lambda d: torch.randn(2, 6, 5, d + 1), r"D_in="),
        (lambda d: torch.randn(2, 0, 5, d), r"T, M >= 1"),
        (lambda d: torch.ones(2, 6, 5, d, dtype=torch.long), r"tokens: expected a floating-point tensor"),
    ],
)
def test_bad_input_names_the_argument(name, bad, match):
    model = tiny(name)
    with pytest.raises(ValueError, match=match):
        model(bad(model.input_dim))


@pytest.mark.parametrize("name", MODELS)
def test_bad_step_input(name):
    model = tiny(name)
    with pytest.raises(ValueError, match=r"tokens_t: expected shape \(B, M, D_in\)"):
        model.step(torch.randn(2, 5, model.input_dim + 1), model.init_state(2))


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        build_model("nope")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['bogus'\]"):
        build_model("slotssm", bogus=1)
    with pytest.raises(ValueError, match="preset: model 'slotssm' has presets"):
        build_model("slotssm", preset="nope")


def test_cls_pooler_is_the_slot_encoder_without_self_attention():
    from slotssm.models.components import ClsPooler, SlotEncoder, frame_encoder

    pooler = frame_encoder(8, 1, 2, 2, 2.0)
    assert isinstance(pooler, ClsPooler) and isinstance(pooler, SlotEncoder)
    assert not any("self_block" in name for name, _ in pooler.named_parameters())
    assert any("self_block" in name for name, _ in frame_encoder(8, 3, 2, 2, 2.0).named_parameters())
    out, attn = pooler(torch.randn(2, 5, 8), return_attention=True)
    assert out.shape == (2, 1, 8) and attn.shape == (2, 1, 5)
