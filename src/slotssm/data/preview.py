"""A PNG contact sheet of one video of a dataset: one row per image array, frames evenly spaced.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["label_colors", "preview_grid", "save_preview"]


def label_colors(labels: np.ndarray) -> np.ndarray:
    """Integer label maps (...) -> RGB (..., 3) uint8: 0 black, every other label a fixed distinct colour."""
    rng = np.random.default_rng(12345)
    table = rng.integers(60, 256, size=(256, 3)).astype(np.uint8)
    table[0] = 0
    return table[np.asarray(labels).astype(np.int64) % 256]


def _to_rgb(img: np.ndarray, is_label: bool) -> np.ndarray:
    if is_label:
        return label_colors(img)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    return img


def preview_grid(
    arrays: Mapping[str, np.ndarray],
    dims: Mapping[str, Sequence[str]],
    keys: Sequence[str],
    *,
    video: int = 0,
    max_frames: int = 8,
    scale: int = 2,
    gap: int = 2,
) -> np.ndarray:
    """One row per key of `keys` for video `video`, up to `max_frames` frames evenly spaced -> (H', W', 3) uint8.

    dims names each array's axes ("video", "time", "height", "width", "rgb"); arrays without an "rgb" axis that are
    not called frames are drawn as label maps.
    """
    rows = []
    for key in keys:
        axes = list(dims[key])
        a = np.asarray(arrays[key][video] if axes[0] == "video" else arrays[key])
        axes = axes[1:] if axes[0] == "video" else axes
        if "time" in axes:
            t = a.shape[axes.index("time")]
            pick = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
            frames = [np.take(a, i, axis=axes.index("time")) for i in pick]
        else:
            frames = [a]
        is_label = "rgb" not in axes and key not in ("frames",)
        tiles = [np.kron(_to_rgb(f, is_label), np.ones((scale, scale, 1), np.uint8)) for f in frames]
        sep = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
        rows.append(np.concatenate([x for tile in tiles for x in (tile, sep)][:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def save_preview(path: str | Path, arrays, dims, keys, **kwargs) -> Path:
    """Write `preview_grid(...)` as a PNG to `path` (parents created). Returns the path."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, preview_grid(arrays, dims, keys, **kwargs))
    return path
