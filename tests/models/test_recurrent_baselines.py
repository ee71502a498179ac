"""SlotRNN, RIM and SAVi specifics: weight sharing, top-k activation, attention normalisation, conditioning, sizes."""

import pytest
import torch

from slotssm.models import build_model, count_parameters, list_presets, run_steps
from slotssm.models.presets import SCALES

B, T, M = 2, 5, 4


def tokens_for(model, t=T, seed=1):
    return torch.randn(B, t, M, model.input_dim, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- SlotRNN


def test_slot_rnn_permuting_cls_and_initial_states_permutes_slots():
    # One GRU cell shared by all slots, each with its own state: relabelling the slots relabels the outputs.
    model = build_model("slot_rnn", preset="tiny").eval()
    x = tokens_for(model)
    state = [torch.randn(B, model.num_slots, model.d_model) for _ in model.layers]
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        before = model(x, state=state)
        cls = model.encoder.cls
        cls.copy_(cls[perm])
        after = model(x, state=[h[:, perm] for h in state])
    torch.testing.assert_close(after.slots, before.slots[:, :, perm], rtol=1e-5, atol=1e-5)
    for a, b in zip(after.state, before.state):
        torch.testing.assert_close(a, b[:, perm], rtol=1e-5, atol=1e-5)


def test_slot_rnn_state_is_carried_and_maps():
    model = build_model("slot_rnn", preset="tiny").eval()
    x = tokens_for(model)
    with torch.no_grad():
        out = model(x, return_attention=True)
        other = model(x, state=[torch.randn(B, model.num_slots, model.d_model) for _ in model.layers])
    assert not torch.allclose(out.slots, other.slots)  # the initial state matters: the GRU reads it
    assert out.attention["encoder"].shape == (B, T, model.num_slots, M)
    assert out.attention["mixer"].shape == (B, T, model.cfg.num_heads, model.num_slots, model.num_slots)
    torch.testing.assert_close(out.attention["encoder"].sum(-1), torch.ones(B, T, model.num_slots))
    with pytest.raises(ValueError, match="state: expected a list of 2 tensors"):
        model.step(x[:, 0], torch.zeros(B, model.num_slots, model.d_model))


@pytest.mark.parametrize("residual", [True, False])
def test_slot_rnn_layer_mixes_the_gru_output_with_or_without_the_residual(residual):
    # residual=True (the default): the mixer reads e + GRU(LN e, h), as SlotSSM's reads s + SSM(LN s).
    model = build_model("slot_rnn", preset="tiny", residual=residual).eval()
    assert model.cfg.residual is residual
    layer = model.layers[0]
    g = torch.Generator().manual_seed(3)
    e, h = (torch.randn(B, model.num_slots, model.d_model, generator=g) for _ in range(2))
    with torch.no_grad():
        out, _ = layer(e, h)
        gru = layer.cell(layer.norm(e).reshape(-1, model.d_model), h.reshape(-1, model.d_model)).view_as(h)
        want, _ = layer.mixer(e + gru if residual else gru)
    torch.testing.assert_close(out, want)
    assert build_model("slot_rnn", preset="tiny").cfg.residual is True


# ---------------------------------------------------------------- RIM


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rim_exactly_top_k_active_and_inactive_states_unchanged(cell):
    model = build_model("rim", preset="tiny", cell=cell).eval()
    x = tokens_for(model, t=6)
    state = model.init_state(B)
    k_active = 0
    with torch.no_grad():
        out = model(x, return_attention=True)
        for t in range(x.shape[1]):
            _, new = model.step(x[:, t], state)
            active = out.attention["active"][:, t]  # (B, K)
            assert active.dtype == torch.bool and (active.sum(1) == model.cfg.top_k).all()
            for old, upd in [(state.h, new.h), (state.c, new.c)][: 1 if cell == "gru" else 2]:
                assert torch.equal(upd[~active], old[~active])  # bit for bit
                assert (upd[active] != old[active]).any(-1).all()  # every active module moves
            k_active += int(active.sum())
            state = new
    torch.testing.assert_close(state.h, out.state.h, rtol=0, atol=0)
    assert k_active == B * x.shape[1] * model.cfg.top_k


def test_rim_active_modules_attend_least_to_null_and_maps_normalised():
    model = build_model("rim", preset="tiny").eval()
    with torch.no_grad():
        out = model(tokens_for(model), return_attention=True)
    att = out.attention
    k = model.num_slots
    assert att["input"].shape == (B, T, k, M) and att["null"].shape == (B, T, k)
    assert att["communication"].shape == (B, T, model.cfg.num_heads, k, k)
    torch.testing.assert_close(att["input"].sum(-1) + att["null"], torch.ones(B, T, k))
    most_null_active = att["null"].masked_fill(~att["active"], -1).amax(-1)  # (B, T)
    least_null_inactive = att["null"].masked_fill(att["active"], 2).amin(-1)
    assert (most_null_active <= least_null_inactive).all()


def test_rim_modules_have_separate_weights():
    # Changing module j's recurrent weights changes module j's candidate state only.
    model = build_model("rim", preset="tiny").eval()
    u, h = torch.randn(B, model.num_slots, model.d_model), torch.randn(B, model.num_slots, model.d_model)
    with torch.no_grad():
        before, _ = model.cells(u, h, None)
        model.cells.ih.weight[1] += 0.5
        after, _ = model.cells(u, h, None)
    changed = (after - before).abs().amax(dim=(0, 2))  # (K,)
    assert changed[1] > 1e-3 and changed[0] == 0 and changed[2:].eq(0).all()


def test_rim_gradients_reach_the_input_attention():
    model = build_model("rim", preset="tiny")
    model(tokens_for(model)).slots.square().sum().backward()
    for p in (model.query.weight, model.key.weight, model.key.bias, model.value.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_rim_config_and_state_errors():
    with pytest.raises(ValueError, match="top_k: expected 1 <= top_k <= num_slots=4, got 5"):
        build_model("rim", preset="tiny", top_k=5)
    with pytest.raises(ValueError, match="cell: expected 'gru' or 'lstm'"):
        build_model("rim", cell="rnn")
    model = build_model("rim", preset="tiny")
    with pytest.raises(ValueError, match=r"state: expected RIMState with h of shape \(2, 4, 16\)"):
        model.step(torch.randn(2, M, model.input_dim), model.init_state(3))


# ---------------------------------------------------------------- SAVi


def test_savi_corrector_attention_is_normalised_over_slots():
    model = build_model("savi", preset="tiny").eval()
    with torch.no_grad():
        out = model(tokens_for(model), return_attention=True)
    attn = out.attention["corrector"]
    assert attn.shape == (B, T, model.num_slots, M)
    assert attn.min() >= 0
    torch.testing.assert_close(attn.sum(2), torch.ones(B, T, M))  # each token's weights sum to 1 over slots
    assert out.attention["encoder"] is attn
    assert out.attention["predictor"].shape == (B, T, model.cfg.num_heads, model.num_slots, model.num_slots)


def test_savi_conditioning_sets_the_initial_slots():
    model = build_model("savi", preset="tiny", conditioning_dim=4).eval()
    x = tokens_for(model)
    boxes = torch.rand(B, model.num_slots, 4)
    with torch.no_grad():
        learned = model(x).slots
        cond = model(x, state=model.init_state(B, conditioning=boxes))
        cond2 = model(x, state=model.init_state(B, conditioning=boxes.flip(1)))
        stepped, _ = run_steps(model, x, model.init_state(B, conditioning=boxes))
    assert not torch.allclose(cond.slots, learned, atol=1e-4)
    assert not torch.allclose(cond.slots, cond2.slots, atol=1e-4)
    torch.testing.assert_close(stepped, cond.slots, rtol=1e-5, atol=1e-6)
    model.train()  # gradients reach the conditioning MLP
    model(x, state=model.init_state(B, conditioning=boxes)).slots.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.conditioning.parameters())


def test_savi_errors():
    model = build_model("savi", preset="tiny")
    with pytest.raises(ValueError, match="conditioning: this model has conditioning_dim=0"):
        model.init_state(B, conditioning=torch.zeros(B, model.num_slots, 4))
    cond = build_model("savi", preset="tiny", conditioning_dim=4)
    with pytest.raises(ValueError, match=r"conditioning: expected shape \(B, K, C\) = \(2, 3, 4\), got \(2, 3, 2\)"):
        cond.init_state(B, conditioning=torch.zeros(B, 3, 2))
    with pytest.raises(ValueError, match=r"state: expected prior slots of shape \(2, 3, 16\)"):
        model.step(torch.randn(B, M, model.input_dim), torch.zeros(B, 4, 16))
    with pytest.raises(ValueError, match="num_iterations: expected >= 1, got 0"):
        build_model("savi", num_iterations=0)


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("name", ["slot_rnn", "savi"])
@pytest.mark.parametrize("preset", ["tiny", *SCALES])
def test_parameter_count_matches_slotssm(name, preset):
    assert preset in list_presets(name)
    ours = count_parameters(build_model(name, preset=preset, input_dim=64))
    ref = count_parameters(build_model("slotssm", preset=preset, input_dim=64))
    assert abs(ours / ref - 1) <= 0.15, f"{name}/{preset}: {ours} parameters vs SlotSSM's {ref}"


@pytest.mark.parametrize("preset", list(SCALES))
def test_rim_presets_keep_slotssm_slots(preset):
    rim = build_model("rim", preset=preset, input_dim=64)
    ref = build_model("slotssm", preset=preset, input_dim=64)
    assert (rim.num_slots, rim.d_model) == (ref.num_slots, ref.d_model)
    assert rim.cfg.top_k < rim.num_slots
