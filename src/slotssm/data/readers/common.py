"""Shared pieces of the real-data readers: reading a video from disk, padding object attributes, tensors out.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels, K object slots.

A video on disk is any of:
  - ``<name>.npy``: an array (T, H, W, 3) or (T, H, W) uint8;
  - ``<name>/``: a folder of frames ``*.png`` / ``*.jpg`` in name order;
  - a video file (``.mp4``, ``.avi``, ...), read with imageio; this needs an imageio video plugin (imageio-ffmpeg
    or PyAV) that slotssm does not install: convert to frames or .npy otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "find_video", "read_video", "select_frames", "pad_objects"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".npy", ".mp4", ".avi", ".webm", ".mkv", ".gif")


def find_video(folder: Path, stem: str) -> Path:
    """The video named `stem` in `folder`: ``stem.npy``, a frame folder ``stem/``, or a video file ``stem.*``."""
    stem = Path(stem).stem if Path(stem).suffix in VIDEO_SUFFIXES else stem
    for suffix in VIDEO_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    if (folder / stem).is_dir():
        return folder / stem
    raise FileNotFoundError(f"{folder / stem}: no video (.npy, frame folder or video file) with this name")


def read_video(path: str | Path) -> np.ndarray:
    """Frames of the video at `path` -> (T, H, W, C) uint8 (C = 3, or 1 for single-channel frames)."""
    import imageio.v3 as iio

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: frame folder without {'/'.join(IMAGE_SUFFIXES)} files")
        frames = np.stack([iio.imread(f) for f in files])
    elif path.suffix == ".npy":
        frames = np.load(path)
    else:
        try:
            frames = np.asarray(iio.imread(path, index=None))
        except Exception as err:  # imageio raises plugin-specific errors for unsupported formats
            raise ValueError(
                f"{path}: cannot decode ({err}); export the video as a frame folder or .npy, "
                "or install an imageio video plugin (imageio-ffmpeg or av)"
            ) from err
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected frames (T, H, W[, C]) uint8, got {frames.dtype} {frames.shape}")
    if frames.shape[-1] == 4:
        frames = frames[..., :3]  # drop alpha
    return frames


def select_frames(frames: np.ndarray, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """frames (T, ...) -> (len(indices), ...); None keeps all. An index past T is an error naming it."""
    if indices is None:
        return frames
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.max() >= len(frames) or idx.min() < -len(frames)):
        raise ValueError(f"frame_indices: expected indices below {len(frames)}, got max {idx.max()}")
    return frames[idx]


def pad_objects(values: Sequence, k: int, fill, dtype, shape: tuple[int, ...] = ()) -> np.ndarray:
    """Per-object values (k' <= k entries) padded to (k, *shape) with `fill`."""
    out = np.full((k, *shape), fill, dtype=dtype)
    if len(values) > k:
        raise ValueError(f"max_objects: the annotation has {len(values)} objects, more than max_objects={k}")
    if len(values):
        out[: len(values)] = np.asarray(values, dtype=dtype).reshape(len(values), *shape)
    return out
