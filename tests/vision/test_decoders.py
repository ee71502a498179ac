import pytest
import torch
import torch.nn.functional as F

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


def test_reconstruction_loss_adds_each_frames_worst_pixels_against_a_slow_reference():
    """hard_pixels 0 is the plain (or weighted) MSE; q > 0 adds the mean error of each frame's round(q * H * W)
    worst pixels, found here by sorting every frame's pixel errors one by one."""
    from slotssm.vision import reconstruction_loss

    g = torch.Generator().manual_seed(0)
    recon, target = torch.rand(2, 3, 3, 4, 5, generator=g), torch.rand(2, 3, 3, 4, 5, generator=g)
    assert torch.allclose(reconstruction_loss(recon, target), F.mse_loss(recon, target))
    for q in (0.01, 0.1, 0.5):
        k = max(1, round(q * 20))
        worst = []
        for b in range(2):
            for t in range(3):
                errs = sorted((((recon[b, t, :, y, x] - target[b, t, :, y, x]) ** 2).mean().item()
                               for y in range(4) for x in range(5)), reverse=True)
                worst.append(sum(errs[:k]) / k)
        want = F.mse_loss(recon, target).item() + sum(worst) / len(worst)
        assert reconstruction_loss(recon, target, hard_pixels=q).item() == pytest.approx(want, rel=1e-5)
    weight = 1.0 + 4.0 * (torch.rand(2, 3, 1, 4, 5, generator=g) > 0.8)
    err = (recon - target) ** 2
    weighted = (weight * err).sum() / (weight.sum() * 3)
    assert torch.allclose(reconstruction_loss(recon, target, weight=weight), weighted)

    # the gradient reaches the worst pixels of each frame twice (plain + hard term) and the others once
    x = recon.clone().requires_grad_(True)
    reconstruction_loss(x, target, hard_pixels=0.05).backward()  # k = 1 pixel per frame
    plain = 2 * (recon - target) / recon.numel()
    extra = (x.grad - plain).abs().sum(2).flatten(2)  # (B, T, H*W)
    per_pixel = err.mean(2).flatten(2)
    assert torch.equal(extra.argmax(-1), per_pixel.argmax(-1))
    assert ((extra > 1e-9).sum(-1) == 1).all()

    with pytest.raises(ValueError, match="hard_pixels"):
        reconstruction_loss(recon, target, hard_pixels=1.0)
    with pytest.raises(ValueError, match="recon, target"):
        reconstruction_loss(recon, target[:, :2])
