import pytest
import torch

from slotssm.vision import CNNEncoder, PatchTokenizer, SoftPositionEmbedding, build_grid


def _grads_everywhere(module):
    return all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("strides,size,grid", [((2, 2, 1, 1), 16, (4, 4)), ((1, 1, 1, 1), 8, (8, 8)),
                                               ((2, 1, 2), 10, (3, 3))])
def test_cnn_encoder_shapes_and_grads(strides, size, grid):
    enc = CNNEncoder(3, 24, channels=8, num_layers=len(strides), strides=strides)
    frames = torch.rand(2, 3, 3, size, size)
    tokens = enc(frames)
    assert enc.grid_size(size, size) == grid
    assert tokens.shape == (2, 3, grid[0] * grid[1], 24)
    tokens.square().mean().backward()
    assert _grads_everywhere(enc)


def test_cnn_encoder_frames_independent_and_uint8():
    enc = CNNEncoder(3, 16, channels=8)
    frames = torch.randint(0, 256, (1, 3, 3, 16, 16), dtype=torch.uint8)
    out = enc(frames)
    torch.testing.assert_close(out, enc(frames.float() / 255))
    changed = frames.clone()
    changed[:, 2] = 0
    out2 = enc(changed)
    torch.testing.assert_close(out2[:, :2], out[:, :2])  # per-frame encoder: no leak across time
    assert not torch.allclose(out2[:, 2], out[:, 2])


def test_cnn_encoder_bad_inputs():
    enc = CNNEncoder(3, 16, channels=8)
    with pytest.raises(ValueError, match="frames"):
        enc(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="frames"):
        enc(torch.rand(2, 1, 4, 16, 16))
    with pytest.raises(ValueError, match="strides"):
        CNNEncoder(3, 16, num_layers=3, strides=(1, 1))


def test_soft_position_embedding():
    grid = build_grid(3, 4)
    assert grid.shape == (3, 4, 4)
    torch.testing.assert_close(grid[0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(grid[-1, -1], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    pe = SoftPositionEmbedding(5)
    x = torch.zeros(2, 3, 4, 5)
    y = pe(x)
    assert y.shape == x.shape and not torch.allclose(y[0, 0, 0], y[0, 2, 3])
    with pytest.raises(ValueError, match="x"):
        pe(torch.zeros(3, 4, 6))


def test_patch_tokenizer():
    tok = PatchTokenizer(8, 4, 3, 16, max_frames=6)
    frames = torch.rand(2, 3, 3, 8, 8)
    out = tok(frames)
    assert out.shape == (2, 3, 4, 16) and tok.num_patches == 4
    # streaming: frames 1..2 on their own, with t0=1, equal the same frames of the whole clip
    torch.testing.assert_close(tok(frames[:, 1:], t0=1), out[:, 1:])
    # the temporal embedding distinguishes identical frames at different times
    same = frames[:, :1].expand(2, 3, 3, 8, 8)
    o = tok(same)
    assert not torch.allclose(o[:, 0], o[:, 1])
    # a patch's token depends on its own pixels only (+ embeddings)
    changed = frames.clone()
    changed[..., :4, :4] = 0.0  # patch 0
    o2 = tok(changed)
    torch.testing.assert_close(o2[:, :, 1:], out[:, :, 1:])
    out.sum().backward()
    assert all(p.grad is not None for p in tok.parameters())
    with pytest.raises(ValueError, match="frames"):
        tok(torch.rand(2, 7, 3, 8, 8))  # longer than max_frames
    with pytest.raises(ValueError, match="frames"):
        tok(torch.rand(2, 3, 3, 8, 12))
    with pytest.raises(ValueError, match="patch_size"):
        PatchTokenizer(8, 3, 3, 16)
    assert PatchTokenizer(8, 4, 3, 16).pos_time is None


def test_sincos_2d_table():
    from slotssm.vision import sincos_2d

    t = sincos_2d(3, 5, 16)
    assert t.shape == (15, 16) and t.dtype == torch.float32
    # row-major: entry i*w + j encodes x=j, y=i; the first quarter is sin(x * 1), the third sin(y * 1)
    assert torch.allclose(t[1 * 5 + 4, 0], torch.sin(torch.tensor(4.0)))
    assert torch.allclose(t[2 * 5 + 0, 8], torch.sin(torch.tensor(2.0)))
    assert torch.cdist(t, t).add(torch.eye(15) * 1e3).min() > 0.1  # every position distinct
    assert sincos_2d(2, 2, 6).abs().max() < 0.2  # d not a multiple of 4: small noise instead


def test_position_embeddings_start_from_sincos():
    from slotssm.vision import TransformerDecoder, sincos_2d

    tok = PatchTokenizer(16, 4, 1, 32)
    assert torch.equal(tok.pos_space.data, sincos_2d(4, 4, 32))
    dec = TransformerDecoder(16, 8, 32, 4, 1, grid=(4, 4))
    assert torch.equal(dec.queries.data, sincos_2d(4, 4, 32))
    with pytest.raises(ValueError, match="grid"):
        TransformerDecoder(16, 8, 32, 4, 1, grid=(4, 5))
