"""`slotssm data import`: a folder of a user's own videos -> an on-disk store (uint8 .npy + manifest).

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels.

    slotssm data import recordings/ --out data/robot --size 64 --frames 32

SRC holds videos (``.mp4``, ``.avi``, ``.mkv``, ``.webm``, ``.gif``, ``.npy``) and/or frame folders (sub-folders of
PNG/JPEG frames), found recursively and sorted by path. Every video is checked before anything is written: one that
cannot be read, or that is shorter than ``--frames``, is an error listing every such file. Each video's first T
frames (T = ``--frames``, default: the shortest video's length) go through `fit_frames` (``--resize crop``: the
central square, or ``stretch``: the whole frame) to size x size RGB, into ``<out>/video.npy`` (n, T, S, S, 3) with a
manifest (generator "import", the source path, the video names in order). The store is built under a temporary
name and renamed when complete; an existing non-empty ``--out`` is refused, never overwritten.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from slotssm.data.readers.common import IMAGE_SUFFIXES, VIDEO_SUFFIXES, count_frames, fit_frames, read_video

__all__ = ["find_videos", "import_videos", "IMPORT_VERSION"]

IMPORT_VERSION = 1


def find_videos(src: str | Path) -> tuple[list[Path], list[Path]]:
    """(videos, other files) under `src`: video files and frame folders, and the files that are neither."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"SRC: {src} is not a folder")
    videos, others = [], []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        images = [f for f in filenames if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        if images and here != src:
            videos.append(here)  # a frame folder; its files are its frames
            continue
        for name in filenames:
            if name.startswith("."):
                continue
            (videos if Path(name).suffix.lower() in VIDEO_SUFFIXES else others).append(here / name)
    return sorted(videos), sorted(others)


def _rgb(frames: np.ndarray) -> np.ndarray:
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def import_videos(src: str | Path, out: str | Path, size: int = 64, frames: int | None = None,
                  resize: str = "crop", progress: bool = True) -> dict[str, Any]:
    """Import every video under `src` into a store at `out` (see the module docstring); returns the manifest."""
    from tqdm.auto import tqdm

    from slotssm.data.store import StoreWriter

    src, out = Path(src), Path(out)
    if size < 1:
        raise ValueError(f"--size: expected >= 1, got {size}")
    if frames is not None and frames < 1:
        raise ValueError(f"--frames: expected >= 1, got {frames}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out: {out} already exists; import writes a new store, it never overwrites one")
    videos, others = find_videos(src)
    if not videos:
        raise FileNotFoundError(f"SRC: no videos or frame folders under {src} (looked for "
                                f"{', '.join(VIDEO_SUFFIXES)} files and folders of {'/'.join(IMAGE_SUFFIXES)} frames)")
    if others:
        print(f"not videos, left out: {', '.join(str(p.relative_to(src)) for p in others)}")
    lengths, bad = {}, []
    for path in tqdm(videos, desc="checking", unit="video", disable=not progress):
        try:
            lengths[path] = count_frames(path)
        except (ValueError, OSError) as err:
            bad.append(f"  {path}: {err}")
    if bad:
        raise ValueError(f"{len(bad)} of {len(videos)} videos under {src} cannot be read:\n" + "\n".join(bad))
    t = frames if frames is not None else min(lengths.values())
    short = [f"  {p}: {n} frames" for p, n in lengths.items() if n < t]
    if short:
        raise ValueError(f"{len(short)} videos under {src} are shorter than --frames {t}:\n" + "\n".join(short))
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an import that was killed
    writer = StoreWriter(tmp, len(videos), {"video": ("video", "time", "height", "width", "rgb")})
    try:
        for i, path in enumerate(tqdm(videos, desc=f"importing -> {out}", unit="video", disable=not progress)):
            clip = read_video(path)
            if len(clip) < t:  # the container announced more frames than it decodes
                raise ValueError(f"{path}: decodes to {len(clip)} frames, fewer than --frames {t}")
            writer.write(i, {"video": fit_frames(_rgb(clip[:t]), size, resize)})
        manifest = writer.close({
            "generator": "import", "version": IMPORT_VERSION,
            "params": {"source": str(src.resolve()), "size": size, "frames": t, "resize": resize},
            "seed": 0, "images": ["video"], "videos": [str(p.relative_to(src)) for p in videos],
        })
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()  # an empty folder, checked above
    os.replace(tmp, out)
    return manifest
