import pytest
import torch

from slotssm.vision import SpatialBroadcastDecoder, TransformerDecoder


def _grads_everywhere(module):
    return all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in module.parameters())


def test_transformer_decoder_shapes_grads():
    dec = TransformerDecoder(num_patches=6, patch_dim_out=12, d_model=16, num_heads=2, num_layers=2, d_slot=10)
    slots = torch.randn(2, 3, 4, 10)  # (B, T, K, Ds): leading axes are kept
    patches, attn = dec(slots)
    assert patches.shape == (2, 3, 6, 12) and attn.shape == (2, 3, 6, 4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 6))
    patches.square().mean().backward()
    assert _grads_everywhere(dec)
    fast, none = dec(slots, return_attention=False)
    assert none is None
    torch.testing.assert_close(fast, patches)


def test_transformer_decoder_slot_permutation_invariant():
    dec = TransformerDecoder(6, 12, 16, 2, num_layers=2)
    slots = torch.randn(3, 5, 16)
    perm = torch.randperm(5)
    p, a = dec(slots)
    p2, a2 = dec(slots[:, perm])
    torch.testing.assert_close(p2, p)
    torch.testing.assert_close(a2, a[..., perm])


@pytest.mark.parametrize("resolution, out_stride", [(None, 1), (8, 1), (8, 2), (4, 2)])
def test_spatial_broadcast_decoder(resolution, out_stride):
    dec = SpatialBroadcastDecoder(10, 16, out_channels=3, hidden=8, initial_size=4, resolution=resolution,
                                  out_stride=out_stride)
    slots = torch.randn(2, 2, 5, 10)
    image, masks, rgb = dec(slots)
    assert image.shape == (2, 2, 3, 16, 16)
    assert masks.shape == (2, 2, 5, 1, 16, 16) and rgb.shape == (2, 2, 5, 3, 16, 16)
    torch.testing.assert_close(masks.sum(2), torch.ones(2, 2, 1, 16, 16))
    torch.testing.assert_close(image, (masks * rgb).sum(2))
    image.square().mean().backward()
    assert _grads_everywhere(dec)


def test_spatial_broadcast_decoder_transposed_output_layer():
    """out_stride=2: the output layer is a stride-2 transposed conv, so the maps come out at 2 x resolution with no
    bilinear step (a 8x8 decoder on a 16x16 image), and even_masks zeroes its alpha channel, whose weights are
    (in, out, ...) there: every slot starts with 1/K of every pixel."""
    dec = SpatialBroadcastDecoder(10, 16, hidden=8, initial_size=4, resolution=8, out_stride=2, even_masks=True)
    assert isinstance(dec.net[-1], torch.nn.ConvTranspose2d) and dec.out_size == 16
    image, masks, rgb = dec(torch.randn(3, 4, 10))
    torch.testing.assert_close(masks, torch.full_like(masks, 0.25))
    torch.testing.assert_close(image, rgb.mean(1))
    raw = dec.net(torch.randn(2, 10, 4, 4))
    assert raw.shape == (2, 4, 16, 16)
    assert not (rgb[:, :, :, 1:] == rgb[:, :, :, :-1]).all()  # distinct neighbouring pixels


def test_spatial_broadcast_decoder_slot_permutation():
    dec = SpatialBroadcastDecoder(10, 16, hidden=8, initial_size=8)
    slots = torch.randn(2, 4, 10)
    perm = torch.randperm(4)
    image, masks, rgb = dec(slots)
    image2, masks2, rgb2 = dec(slots[:, perm])
    torch.testing.assert_close(image2, image)
    torch.testing.assert_close(masks2, masks[:, perm])


def test_decoder_bad_inputs():
    dec = SpatialBroadcastDecoder(10, 16, hidden=8, initial_size=4)
    with pytest.raises(ValueError, match="slots"):
        dec(torch.randn(2, 4, 9))
    with pytest.raises(ValueError, match="slots"):
        dec(torch.randn(4, 10))
    with pytest.raises(ValueError, match="resolution"):
        SpatialBroadcastDecoder(10, 16, initial_size=4, resolution=12)
    with pytest.raises(ValueError, match="resolution"):
        SpatialBroadcastDecoder(10, 16, initial_size=4, resolution=32)
    with pytest.raises(ValueError, match="resolution"):
        SpatialBroadcastDecoder(10, 16, initial_size=4, resolution=16, out_stride=2)
    with pytest.raises(ValueError, match="out_stride"):
        SpatialBroadcastDecoder(10, 16, initial_size=4, resolution=8, out_stride=4)
    with pytest.raises(ValueError, match="slots"):
        TransformerDecoder(6, 12, 16, 2, d_slot=10)(torch.randn(2, 4, 16))
