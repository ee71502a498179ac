"""SlotSSM / OC-SlotSSM specifics: modularity in time, CLS equivariance, changing slot counts, presets."""

import pytest
import torch
from einops import rearrange

from slotssm.models import build_model, count_parameters, run_steps


def test_ssm_sublayer_keeps_slots_apart():
    # Perturbing slot i's input to the SSM sub-layer changes only slot i's output (no mixing in time).
    model = build_model("slotssm", preset="tiny").eval()
    layer = model.layers[0]
    s = torch.randn(2, 7, 3, model.d_model)

    def ssm_out(s):
        y, _ = layer.ssm(layer.norm_ssm(rearrange(s, "b t k d -> (b k) t d")))
        return rearrange(y, "(b k) t d -> b t k d", b=2)

    s2 = s.clone()
    s2[:, :, 1] += torch.randn_like(s2[:, :, 1])
    with torch.no_grad():
        d = (ssm_out(s2) - ssm_out(s)).abs().amax(dim=(0, 1, 3))  # per slot
    assert d[1] > 1e-3 and d[0] == 0 and d[2] == 0


@pytest.mark.parametrize("name", ["slotssm", "oc_slotssm"])
def test_permuting_cls_tokens_permutes_slots(name):
    model = build_model(name, preset="tiny").eval()
    x = torch.randn(2, 5, 4, model.input_dim)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        before = model(x).slots
        first = model.layers[0]
        cls = first.encoder.cls if first.cls is None else first.cls
        cls.copy_(cls[perm])
        after = model(x).slots
    torch.testing.assert_close(after, before[:, :, perm], rtol=1e-5, atol=1e-5)


def test_changing_slot_counts_and_attention_maps():
    model = build_model("slotssm", preset="tiny", num_layers=3, layer_slots=(4, 4, 2)).eval()
    x = torch.randn(2, 6, 5, model.input_dim)
    with torch.no_grad():
        out = model(x, return_attention=True)
        stepped, _ = run_steps(model, x)
    assert out.slots.shape == (2, 6, 2, model.d_model)
    assert out.attention["encoder"].shape == (2, 6, 4, 5)  # first layer's slots over the frame's tokens
    assert out.attention["encoder2"].shape == (2, 6, 2, 4)  # new slots over the previous layer's slots
    torch.testing.assert_close(out.attention["encoder"].sum(-1), torch.ones(2, 6, 4))
    torch.testing.assert_close(stepped, out.slots, rtol=1e-5, atol=1e-5)


def test_oc_slotssm_masks_are_a_softmax_over_slots():
    model = build_model("oc_slotssm", preset="tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 5, model.input_dim), return_attention=True)
    attn = out.attention["encoder"]  # (B, T, K, M), averaged over heads: sums to 1 over slots per token
    torch.testing.assert_close(attn.sum(2), torch.ones(2, 3, 5), rtol=1e-5, atol=1e-5)


def test_config_errors():
    with pytest.raises(ValueError, match="layer_slots: expected 2 entries"):
        build_model("slotssm", layer_slots=(4, 4, 4))
    with pytest.raises(ValueError, match="OC-SlotSSM keeps one slot count"):
        build_model("oc_slotssm", num_layers=2, layer_slots=(4, 3))
    with pytest.raises(ValueError, match="encoder: expected"):
        build_model("slotssm", encoder="nope")


def test_paper_presets_sizes():
    bb = build_model("slotssm", preset="paper_blinking", input_dim=48)
    assert (bb.d_model, bb.num_slots, bb.cfg.d_state, bb.cfg.expand, bb.cfg.num_heads) == (64, 6, 16, 1.25, 4)
    assert bb.layers[0].ssm.d_inner == 80
    movi = build_model("oc_slotssm", preset="paper_movi", input_dim=64)
    assert (movi.d_model, movi.num_slots, movi.cfg.encoder) == (192, 11, "inverted")
    assert 1e5 < count_parameters(bb) < 1e6
