"""Single-state SSMs, Transformer / SlotTransformer and PSB: the property each baseline exists for, and its size."""

import pytest
import torch
from einops import rearrange

from slotssm.layers import InvertedAttention
from slotssm.models import build_model, count_parameters, list_presets, model_config, run_steps
from slotssm.models.__main__ import main as bench_main
from slotssm.models.psb import cross_mask, stepwise_inverted_attention

BASELINES = ["single_state_ssm", "single_state_ssm_split", "transformer", "slot_transformer", "psb"]


def tokens(model, b=2, t=6, m=5, seed=1):
    return torch.randn(b, t, m, model.input_dim, generator=torch.Generator().manual_seed(seed))


def test_single_state_ssm_has_one_slot_and_one_state_per_sequence():
    model = build_model("single_state_ssm", preset="tiny").eval()
    with torch.no_grad():
        out = model(tokens(model, b=3), return_attention=True)
    assert model.num_slots == 1 and out.slots.shape == (3, 6, 1, model.d_model)
    assert out.state[0].ssm.shape[0] == 3  # batch B, not B*K
    torch.testing.assert_close(out.attention["encoder"].sum(-1), torch.ones(3, 6, 1))  # CLS over the M tokens


@pytest.mark.parametrize("name", ["single_state_ssm", "transformer"])
def test_single_slot_models_take_no_slot_count(name):
    # A task's "num_slots" override (given to models that have the field) must not turn them into K-slot variants.
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['num_slots'\]"):
        model_config(name, "tiny", num_slots=5)
    assert build_model(name, preset="tiny").num_slots == 1


def test_split_variant_mixes_slots_in_time():
    # Perturb slot i at frame t at the input of the monolithic SSM: other slots change at t and later, never before.
    model = build_model("single_state_ssm_split", preset="tiny").eval()
    layer, k = model.layers[0], model.num_slots
    s = torch.randn(2, 7, k, model.d_model)

    def ssm_out(s):
        y, _ = layer.ssm(rearrange(layer.norm_ssm(s), "b t k d -> b t (k d)"))
        return rearrange(y, "b t (k d) -> b t k d", k=k)

    s2 = s.clone()
    s2[:, 3, 0] += torch.randn_like(s2[:, 3, 0])
    with torch.no_grad():
        d = (ssm_out(s2) - ssm_out(s)).abs().amax(dim=(0, 3))  # (T, K)
    assert (d[:3] == 0).all()  # causal
    assert (d[4:, 1:] > 1e-4).all()  # slots j != 0 at later frames: the single state carries slot 0's change


def test_split_variant_state_is_one_vector_of_all_slots():
    model = build_model("single_state_ssm_split", preset="tiny")
    st = model.init_state(2)[0]
    assert st.ssm.shape == (2, model.layers[0].ssm.d_inner, model.cfg.d_state)
    assert model.layers[0].ssm.d_model == model.num_slots * model.d_model


def test_slot_transformer_attends_to_steps_up_to_t_only():
    model = build_model("slot_transformer", preset="tiny").eval()
    x = tokens(model, t=5)
    with torch.no_grad():
        out = model(x, return_attention=True)
        second = model(x[:, 3:], state=model(x[:, :3]).state, return_attention=True)
    k = model.num_slots
    w = out.attention["time"]  # (B, T, K, T, K)
    assert w.shape == (2, 5, k, 5, k)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)[None, :, None, :, None].expand_as(w)  # key step > query step
    assert (w[future] == 0).all()
    torch.testing.assert_close(w.sum(dim=(3, 4)), torch.ones(2, 5, k))
    assert (w[:, 4, :, :4] > 0).any()  # it does read earlier steps
    # Continuing from a cache: the new steps see the 3 cached steps plus themselves.
    assert second.attention["time"].shape == (2, 2, k, 5, k)
    torch.testing.assert_close(second.attention["time"], out.attention["time"][:, 3:], rtol=1e-5, atol=1e-6)
    assert second.state.offset == 5 and second.state.past[0].shape == (2, 5 * k, model.d_model)


def test_transformer_time_position_comes_from_the_state():
    # The same frames at a later offset give other outputs: positions continue from the cache.
    model = build_model("transformer", preset="tiny").eval()
    x = tokens(model, t=3)
    with torch.no_grad():
        fresh = model(x).slots
        later = model(x, state=model(tokens(model, t=2, seed=5)).state).slots
    assert fresh.shape == (2, 3, 1, model.d_model)
    assert not torch.allclose(fresh, later)


def test_stepwise_inverted_attention_equals_inverted_attention_per_step():
    torch.manual_seed(0)
    attn = InvertedAttention(8, 2).double()
    b, t, k, m, c = 2, 4, 3, 5, 2
    x = torch.randn(b, t, k, 8, dtype=torch.float64)
    ctx = torch.randn(b, (c + t) * m, 8, dtype=torch.float64)
    split = lambda y: rearrange(y, "b s (h p) -> b h s p", h=2)  # noqa: E731
    allowed = cross_mask(t, c, m, window=3)
    out, w = stepwise_inverted_attention(attn, x, split(attn.k_proj(ctx)), split(attn.v_proj(ctx)), allowed)
    for i in range(t):
        keys = ctx[:, allowed[i]]  # frames max(0, c+i-2) .. c+i
        assert keys.shape[1] == min(3, c + i + 1) * m
        ref, ref_w = attn(x[:, i], keys, return_attention=True)
        torch.testing.assert_close(out[:, i], ref)
        torch.testing.assert_close(w[:, :, i][..., allowed[i]], ref_w)
        assert (w[:, :, i][..., ~allowed[i]] == 0).all()


@pytest.mark.parametrize("window", [0, 1, 2])
def test_psb_no_information_from_the_future_in_any_layer(window):
    model = build_model("psb", preset="tiny", num_layers=3, cross_window=window).eval()
    outs = {}
    for i, layer in enumerate(model.layers):
        layer.register_forward_hook(lambda mod, inp, out, i=i: outs.__setitem__(i, out[0]))
    x = tokens(model, t=6)
    x2 = x.clone()
    x2[:, 3] += torch.randn_like(x2[:, 3])
    with torch.no_grad():
        model(x)
        before = dict(outs)
        model(x2)
    for i in range(3):
        torch.testing.assert_close(outs[i][:, :3], before[i][:, :3], rtol=0, atol=0)
        assert not torch.allclose(outs[i][:, 3], before[i][:, 3])


@pytest.mark.parametrize("window", [1, 2])
def test_psb_windowed_step_and_chunks_equal_forward(window):
    model = build_model("psb", preset="tiny", cross_window=window, cross_chunk=2).eval()
    x = tokens(model, t=7)
    with torch.no_grad():
        full = model(x)
        stepped, state = run_steps(model, x)
        first = model(x[:, :4])
        second = model(x[:, 4:], state=first.state)
    torch.testing.assert_close(stepped, full.slots, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([first.slots, second.slots], 1), full.slots, rtol=1e-5, atol=1e-5)
    assert state.cached_frames == window - 1 and state.kv[0][0].shape[2] == (window - 1) * 5
    assert state.time[0].shape[1] == 7  # time attention keeps every step


def test_psb_window_limits_what_a_step_reads():
    # With cross_window=1 and one layer, a step's slots see older frames only through the time attention; remove
    # it (zero output projection) and step t depends on frame t alone.
    model = build_model("psb", preset="tiny", num_layers=1, cross_window=1).eval()
    with torch.no_grad():
        model.layers[0].time.attn.out_proj.weight.zero_()
        model.layers[0].time.attn.out_proj.bias.zero_()
        x = tokens(model, t=4)
        x2 = x.clone()
        x2[:, 1] += 1.0
        a, b = model(x).slots, model(x2).slots
    torch.testing.assert_close(a[:, 2:], b[:, 2:], rtol=0, atol=0)
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_psb_masks_are_a_softmax_over_slots_and_chunking_changes_nothing():
    x = tokens(build_model("psb", preset="tiny"), t=5)
    with torch.no_grad():
        torch.manual_seed(0)
        a = build_model("psb", preset="tiny", cross_chunk=2).eval()(x, return_attention=True)
        torch.manual_seed(0)
        b = build_model("psb", preset="tiny", cross_chunk=16).eval()(x, return_attention=True)
    enc = a.attention["encoder"]  # (B, T, K, M)
    assert enc.shape == (2, 5, 3, 5)
    torch.testing.assert_close(enc.sum(2), torch.ones(2, 5, 5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.slots, b.slots, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(enc, b.attention["encoder"])


def test_psb_state_rejects_another_token_count():
    model = build_model("psb", preset="tiny").eval()
    st = model(tokens(model, t=2, m=5)).state
    with pytest.raises(ValueError, match="tokens: expected M=5"):
        model(tokens(model, t=2, m=4), state=st)


@pytest.mark.parametrize("name, bad, match", [
    ("psb", dict(cross_window=-1), "cross_window"),
    ("psb", dict(num_heads=3), "num_heads: must divide d_model"),
    ("transformer", dict(num_layers=0), "num_layers: expected >= 1"),
    ("slot_transformer", dict(num_heads=5), "num_heads"),
    ("single_state_ssm", dict(ssm="lstm"), "ssm: expected"),
    ("single_state_ssm_split", dict(expand=0.001), "expand"),
])
def test_config_errors_name_the_field(name, bad, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, preset="tiny", **bad)


def _count(name, preset):
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        return count_parameters(build_model(name, preset=preset, input_dim=64))


@pytest.mark.parametrize("name", BASELINES)
def test_presets_are_parameter_matched_to_slotssm(name):
    presets = [p for p in list_presets("slotssm") if p != "tiny"]
    assert set(presets) <= set(list_presets(name))
    for preset in presets:
        ratio = _count(name, preset) / _count("slotssm", preset)
        assert 0.85 <= ratio <= 1.15, f"{name} {preset}: {ratio:.3f} x SlotSSM's parameters"


def test_bench_table_lists_the_models(capsys):
    assert bench_main(["--preset", "tiny", "--batch", "1", "--T", "3", "--tokens", "4", "--repeats", "1",
                       "--models", "transformer,psb", "--threads", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["transformer", "psb"]
    for r in rows:
        params, fwd, step = int(r[2].replace(",", "")), float(r[3]), float(r[4])
        assert params == count_parameters(build_model(r[0], preset="tiny")) and fwd > 0 and step > 0
    with pytest.raises(SystemExit):
        bench_main(["--models", "nope"])


def test_psb_cross_time_bias_is_causal_step_equal_and_weights_recent_frames():
    torch.manual_seed(3)
    model = build_model("psb", preset="tiny", num_layers=2, cross_chunk=2).eval()
    with torch.no_grad():  # a learned-looking bias: recent frames weigh more (distance 0 most)
        for layer in model.layers:
            layer.cross_bias.copy_(-torch.arange(layer.cross_bias.shape[1], dtype=torch.float32).expand_as(
                layer.cross_bias) * 2.0)
    x = tokens(model, t=6)
    with torch.no_grad():
        full = model(x)
        stepped, _ = run_steps(model, x)
        x2 = x.clone()
        x2[:, 4] += torch.randn_like(x2[:, 4])
        moved = model(x2).slots
    torch.testing.assert_close(stepped, full.slots, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(moved[:, :4], full.slots[:, :4], rtol=0, atol=0)  # nothing from the future
    # With the bias, a change to an old frame moves the last step less than without it.
    x3 = x.clone()
    x3[:, 0] += 3 * torch.randn_like(x3[:, 0])
    with torch.no_grad():
        biased = (model(x3).slots[:, -1] - full.slots[:, -1]).norm()
        for layer in model.layers:
            layer.cross_bias.zero_()
        plain = (model(x3).slots[:, -1] - model(x).slots[:, -1]).norm()
    assert biased < plain
    # the bias learns: it gets a gradient
    model.train()
    model(x).slots.square().sum().backward()
    assert all(layer.cross_bias.grad is not None and layer.cross_bias.grad.abs().sum() > 0 for layer in model.layers)
