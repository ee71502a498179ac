"""Shared pieces of the real-data readers: reading a video from disk, padding object attributes, tensors out.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels, K object slots.

A video on disk is any of:
  - ``<name>.npy``: an array (T, H, W, 3) or (T, H, W) uint8;
  - ``<name>/``: a folder of frames ``*.png`` / ``*.jpg`` in name order;
  - a video file (``.mp4``, ``.avi``, ``.mkv``, ``.webm``), decoded with PyAV (FFmpeg), from the optional extra
    ``pip install "slotssm[datasets]"``; a ``.gif`` is read with imageio.

`fit_frames` brings frames of any size to the square size of a task (the rule is in its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "MissingExtraError", "require", "find_video", "read_video", "count_frames",
    "select_frames", "pad_objects", "fit_frames", "fit_positions", "to_grey", "RESIZE_RULES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".npy", ".mp4", ".avi", ".webm", ".mkv", ".gif")
_FFMPEG_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv")
RESIZE_RULES = ("crop", "stretch")
EXTRA = "datasets"


class MissingExtraError(ImportError, ValueError):
    """An optional package is not installed; the message names the package and the extra that installs it.

    A ValueError too, so the command line prints it as one line instead of a traceback.
    """


def require(module: str, package: str, purpose: str):
    """Import `module` or raise MissingExtraError naming `package` and ``pip install "slotssm[datasets]"``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{purpose} needs the package {package!r}, which is not installed: pip install \"slotssm[{EXTRA}]\""
        ) from err


def find_video(folder: Path, stem: str) -> Path:
    """The video named `stem` in `folder`: ``stem.npy``, a frame folder ``stem/``, or a video file ``stem.*``."""
    stem = Path(stem).stem if Path(stem).suffix in VIDEO_SUFFIXES else stem
    for suffix in VIDEO_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    if (folder / stem).is_dir():
        return folder / stem
    raise FileNotFoundError(f"{folder / stem}: no video (.npy, frame folder or video file) with this name")


def _decode_ffmpeg(path: Path) -> np.ndarray:
    """All frames of a video file as (T, H, W, 3) uint8 RGB, decoded by PyAV."""
    av = require("av", "av", f"{path}: decoding {path.suffix} files")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, ValueError, OSError) as err:
        raise ValueError(f"{path}: cannot decode the video ({err})") from err
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    return np.stack(frames)


def read_video(path: str | Path) -> np.ndarray:
    """Frames of the video at `path` -> (T, H, W, C) uint8 (C = 3, or 1 for single-channel frames)."""
    import imageio.v3 as iio

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: frame folder without {'/'.join(IMAGE_SUFFIXES)} files")
        try:
            frames = np.stack([iio.imread(f) for f in files])
        except (OSError, ValueError) as err:  # an unreadable or differently sized frame
            raise ValueError(f"{path}: cannot read the frames ({err})") from err
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    elif path.suffix == ".npy":
        try:
            frames = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from err
    elif path.suffix.lower() in _FFMPEG_SUFFIXES:
        frames = _decode_ffmpeg(path)
    else:
        try:
            frames = np.asarray(iio.imread(path, index=None))
        except Exception as err:  # imageio raises plugin-specific errors for unsupported formats
            raise ValueError(f"{path}: cannot decode ({err}); export the video as a frame folder or .npy") from err
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected frames (T, H, W[, C]) uint8, got {frames.dtype} {frames.shape}")
    if frames.shape[-1] == 4:
        frames = frames[..., :3]  # drop alpha
    return frames


def count_frames(path: str | Path) -> int:
    """Number of frames of the video at `path` without decoding it where the container says (else by decoding)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    if path.suffix == ".npy":
        try:
            return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from err
    if path.suffix.lower() in _FFMPEG_SUFFIXES:
        av = require("av", "av", f"{path}: decoding {path.suffix} files")
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError("no video stream")
                n = container.streams.video[0].frames
                return int(n) if n > 0 else sum(1 for _ in container.decode(video=0))
        except (av.FFmpegError, ValueError, OSError) as err:
            raise ValueError(f"{path}: cannot decode the video ({err})") from err
    return len(read_video(path))


def to_grey(frames: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint8 grey levels, ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B, rounded."""
    if frames.shape[-1] == 1:
        return frames[..., 0]
    luma = frames[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def crop_box(height: int, width: int, resize: str) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of the region that `fit_frames` scales to the output square."""
    if resize not in RESIZE_RULES:
        raise ValueError(f"resize: expected one of {RESIZE_RULES}, got {resize!r}")
    if resize == "stretch":
        return 0, 0, height, width
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def fit_frames(frames: np.ndarray, size: int, resize: str = "crop", nearest: bool = False) -> np.ndarray:
    """Frames (T, H, W[, C]) uint8 -> (T, size, size[, C]) uint8.

    The rule: with ``resize="crop"`` the central square of side min(H, W) is kept (offsets floor((H - side) / 2),
    floor((W - side) / 2)); with ``"stretch"`` the whole frame is kept and the aspect ratio is not. That region is
    then scaled to size x size: bilinear with antialiasing (an area filter when shrinking) for images, nearest
    neighbour for label maps (`nearest=True`, e.g. segmentations, so no label is invented at object borders).
    """
    import torch
    import torch.nn.functional as F

    if frames.ndim not in (3, 4):
        raise ValueError(f"frames: expected (T, H, W[, C]), got shape {frames.shape}")
    top, left, ch, cw = crop_box(frames.shape[1], frames.shape[2], resize)
    region = frames[:, top : top + ch, left : left + cw]
    if region.shape[1:3] == (size, size):
        return np.ascontiguousarray(region)
    x = torch.from_numpy(np.ascontiguousarray(region))
    x = (x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)).float()  # (T, C, h, w)
    if nearest:
        y = F.interpolate(x, size=(size, size), mode="nearest-exact")
    else:
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    y = y.round().clamp(0, 255).to(torch.uint8)
    return (y[:, 0] if frames.ndim == 3 else y.permute(0, 2, 3, 1)).numpy()


def fit_positions(positions: np.ndarray, height: int, width: int, size: int, resize: str) -> np.ndarray:
    """Pixel positions (..., 2) as (x, y) in an H x W frame -> the same points in the `fit_frames` output."""
    top, left, ch, cw = crop_box(height, width, resize)
    scale = np.array([size / cw, size / ch])
    return ((positions - np.array([left, top])) * scale).astype(positions.dtype)


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
