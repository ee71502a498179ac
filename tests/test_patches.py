"""slotssm.patches: patch order, pixel order inside a patch, both layouts, numpy and torch, round trips, errors."""

import numpy as np
import pytest
import torch

from slotssm.patches import patchify, unpatchify


def test_channels_first_order_and_round_trip():
    img = torch.rand(2, 5, 3, 8, 12)  # (B, T, C, height, width)
    p = patchify(img, (4, 3))
    assert p.shape == (2, 5, 8, 36)
    # patch 1 is the top row's second patch; inside it pixels row-major, channels last
    torch.testing.assert_close(p[0, 0, 1], img[0, 0, :, 0:4, 3:6].permute(1, 2, 0).reshape(-1))
    torch.testing.assert_close(unpatchify(p, (8, 12), (4, 3)), img)
    assert torch.equal(unpatchify(patchify(img[:, :, :1], (4, 3)), (8, 12), (4, 3), channels=1), img[:, :, :1])
    assert unpatchify(p, (8, 12), (4, 3), channels=3).shape == img.shape


def test_long_sequence_order_channels_last_numpy_and_torch():
    """The long-context task's sequence (§7.2): frames (B, T, H, W, C) -> (B, T*M, p*p*C), T and M merged."""
    frames = np.arange(2 * 3 * 8 * 16 * 3, dtype=np.int64).reshape(2, 3, 8, 16, 3)  # (B, T, H, W, C)
    seq = patchify(frames, 4, channels_last=True).reshape(2, 3 * 8, 48)
    # Step 1 is frame 0's second patch in the top row: rows 0..3, columns 4..7, row-major, channels last.
    assert (seq[0, 1] == frames[0, 0, 0:4, 4:8].reshape(-1)).all()
    # Step 4 starts the second patch row; step 8 is frame 1's first patch.
    assert (seq[1, 4] == frames[1, 0, 4:8, 0:4].reshape(-1)).all()
    assert (seq[1, 8] == frames[1, 1, 0:4, 0:4].reshape(-1)).all()
    assert (unpatchify(seq.reshape(2, 3, 8, 48), (8, 16), 4, channels_last=True) == frames).all()
    tseq = patchify(torch.from_numpy(frames), 4, channels_last=True).flatten(1, 2)
    assert torch.equal(tseq, torch.from_numpy(seq))
    assert torch.equal(unpatchify(tseq.unflatten(1, (3, 8)), (8, 16), 4, channels_last=True), torch.from_numpy(frames))


def test_layouts_cut_the_same_patches():
    img = torch.rand(4, 3, 8, 12)
    assert torch.equal(patchify(img, 4), patchify(img.permute(0, 2, 3, 1), 4, channels_last=True))
    p = patchify(img, 4)
    assert torch.equal(unpatchify(p, (8, 12), 4, channels_last=True), img.permute(0, 2, 3, 1))


def test_paper_sequence_length_and_errors():
    frames = np.zeros((40, 64, 64, 3), np.uint8)
    assert patchify(frames, 8, channels_last=True).reshape(-1, 192).shape == (2560, 192)  # 40 frames x 64 patches
    with pytest.raises(ValueError, match="images"):
        patchify(frames, 7, channels_last=True)
    with pytest.raises(ValueError, match="images"):
        patchify(np.zeros((64, 64)), 8)
    with pytest.raises(ValueError, match="patch_size"):
        patchify(frames, 0)
    with pytest.raises(ValueError, match="patches"):
        unpatchify(np.zeros((10, 192)), 64, 8)
    with pytest.raises(ValueError, match="patches"):
        unpatchify(torch.zeros(2, 8, 36), 8, 4)
