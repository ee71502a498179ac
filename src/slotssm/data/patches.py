"""Frames <-> the long patch sequence of the long-context task (SlotSSM paper §7.2), for numpy and torch alike.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels, C channels, p the patch
side, and M = (H / p) * (W / p) patches per frame, so a video of T frames becomes T * M steps of p * p * C values.

Order: frame by frame; inside a frame, patches row-major (left to right, then top to bottom); inside a patch,
pixels row-major with the channels last. `unpatchify` is the exact inverse.
"""

from __future__ import annotations

from typing import Any

__all__ = ["patchify", "unpatchify"]


def _permute(x: Any, axes: list[int]) -> Any:
    # torch.Tensor.permute and numpy.ndarray.transpose take the same full permutation.
    return x.permute(*axes) if hasattr(x, "permute") else x.transpose(axes)


def patchify(frames: Any, patch: int) -> Any:
    """frames (..., T, H, W, C) -> sequence (..., T * M, p * p * C), M = (H / p) * (W / p); numpy or torch."""
    if frames.ndim < 4:
        raise ValueError(f"frames: expected (..., T, H, W, C), got shape {tuple(frames.shape)}")
    *lead, t, h, w, c = frames.shape
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch: expected a divisor of H={h} and W={w}, got {patch}")
    hp, wp = h // patch, w // patch
    x = frames.reshape(*lead, t, hp, patch, wp, patch, c)  # (..., T, H/p, p, W/p, p, C)
    a = len(lead)
    x = _permute(x, list(range(a)) + [a, a + 1, a + 3, a + 2, a + 4, a + 5])  # (..., T, H/p, W/p, p, p, C)
    return x.reshape(*lead, t * hp * wp, patch * patch * c)


def unpatchify(sequence: Any, patch: int, image_size: int | tuple[int, int]) -> Any:
    """sequence (..., T * M, p * p * C) -> frames (..., T, H, W, C); image_size is H = W or (H, W)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if sequence.ndim < 2:
        raise ValueError(f"sequence: expected (..., T * M, p * p * C), got shape {tuple(sequence.shape)}")
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch: expected a divisor of H={h} and W={w}, got {patch}")
    *lead, steps, dim = sequence.shape
    hp, wp = h // patch, w // patch
    if dim % (patch * patch) or steps % (hp * wp):
        raise ValueError(
            f"sequence: expected (..., T * {hp * wp}, {patch * patch} * C) for patch={patch} on {h}x{w} images, "
            f"got shape {tuple(sequence.shape)}"
        )
    c, t = dim // (patch * patch), steps // (hp * wp)
    x = sequence.reshape(*lead, t, hp, wp, patch, patch, c)  # (..., T, H/p, W/p, p, p, C)
    a = len(lead)
    x = _permute(x, list(range(a)) + [a, a + 1, a + 3, a + 2, a + 4, a + 5])  # (..., T, H/p, p, W/p, p, C)
    return x.reshape(*lead, t, h, w, c)
