"""Data sources of the tasks: ``data.source=generated`` (the default) or a reader of real data on disk.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels, K object slots.

    slotssm train object_centric --model oc_slotssm --out runs/movi \
        --set data.source=movi --set data.root=/data/movi_a/128x128/1.0.0

Sources by task (`TASK_SOURCES`): object_centric ``movi``, ``folder``; snitch_localization ``cater``;
video_prediction ``bouncing_balls_h5``, ``clevrer``, ``folder``. Each reader source has a training and a
validation split (`SPLITS`); ``folder`` is a store written by ``slotssm data import``, whose last videos are held
out (`folder_split`).

The rule for frames, the same for every source: the first T frames of each video (T from the task's config; a
shorter video is an error naming it), then `fit_frames` to image_size x image_size (``data.resize``: "crop" keeps
the central square, "stretch" the whole frame), bilinear with antialiasing for images, nearest neighbour for label
maps, positions moved with the pixels and visibility recomputed from the fitted masks. video_prediction works on
grey levels (BT.601 luma) because its decoder predicts one grey level per pixel.

A reader source is converted once into a store under the run's data directory (``<data_dir>/<source>-<split>-
<digest>``), which training, ``slotssm eval`` and ``slotssm viz`` then memory-map. Its manifest records a
fingerprint of the split's source files (names, sizes, modification times): a source that changed later is an error
naming the cache to remove, never a silently stale or silently rebuilt dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slotssm.data.readers.common import RESIZE_RULES, fit_frames, fit_positions, to_grey

__all__ = ["TASK_SOURCES", "SPLITS", "SplitRequest", "check_source", "source_splits", "open_reader", "fit_item",
           "folder_split", "note_skipped"]

log = logging.getLogger("slotssm.data")

TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "object_centric": ("movi", "folder"),
    "snitch_localization": ("cater",),
    "video_prediction": ("bouncing_balls_h5", "clevrer", "folder"),
    "blinking_balls": (),  # its targets come from the generator's colour log: no real counterpart
}
SPLITS = {"movi": ("train", "validation"), "cater": ("train", "val"), "clevrer": ("train", "validation"),
          "bouncing_balls_h5": ("training", "validation")}
CACHE_VERSION = 1  # bump when the bytes of a converted source change for the same request
DIMS = {
    "video": ("video", "time", "height", "width", "rgb"), "frames": ("video", "time", "height", "width"),
    "segmentations": ("video", "time", "height", "width"), "ids": ("video", "time", "height", "width"),
    "shape": ("video", "object"), "color_id": ("video", "object"), "size": ("video", "object"),
    "color": ("video", "object", "rgb"), "positions": ("video", "time", "object", "xy"),
    "visibility": ("video", "time", "object"), "num_objects": ("video",), "label": ("video",),
}
_TIME_KEYS = ("video", "frames", "segmentations", "ids", "positions", "visibility")


def check_source(task: str, source: str, resize: str, root: str | None = None) -> None:
    """Validate data.source and data.resize of a task config and, unless root is None, data.root with them.

    Config classes call it with root=None from __post_init__: overrides are applied one at a time, so
    ``--set data.source=movi --set data.root=DIR`` passes through a state with a source and no root yet.
    `source_splits` checks the pair when the datasets are built.
    """
    allowed = ("generated", *TASK_SOURCES.get(task, ()))
    if source not in allowed:
        raise ValueError(f"{source!r} is not a data source of task {task!r} (data.source); choose one of "
                         f"{', '.join(allowed)}")
    if resize not in RESIZE_RULES:
        raise ValueError(f"{resize!r} is not a resize rule (data.resize); choose one of {', '.join(RESIZE_RULES)}")
    if root is None:
        return
    if source == "generated" and root:
        readers = ", ".join(allowed[1:]) or "none for this task"
        raise ValueError(f"data.root={root!r} is only read with a reader source (data.source: {readers}); "
                         "data.source is 'generated'")
    if source != "generated" and not root:
        raise ValueError(f"data.source={source} needs the dataset's path: --set data.root=PATH")


@dataclass(frozen=True)
class SplitRequest:
    """What a task reads from one split: keys (those the source lacks are left out), T, the output size.

    frames_field names the config field that sets num_frames (for messages); grey: return grey frames under
    "frames" (T, H, W) instead of "video" (T, H, W, 3).
    """

    keys: tuple[str, ...]
    num_frames: int
    frames_field: str
    image_size: int
    grey: bool = False


def open_reader(source: str, root: str | Path, split: str, max_objects: int = 24):
    """The reader of `split` of `source` at `root`: an object with len(), read(i) -> numpy dict, describe(i)."""
    root = Path(root)
    if source == "movi":
        from slotssm.data.readers.movi import MoviDataset
        from slotssm.data.readers.movi_tfds import MoviTFRecordDataset, find_shards

        if find_shards(root, split):
            return MoviTFRecordDataset(root, split, max_objects=max_objects)
        if (root / split).is_dir():
            return MoviDataset(root, split, max_objects=max_objects)
        raise FileNotFoundError(f"{root}: neither TFRecord shards *-{split}.tfrecord* nor a folder {split}/ of "
                                "exported videos (see docs/data.md, MOVi)")
    if source == "cater":
        from slotssm.data.readers.cater import CaterDataset

        return CaterDataset(root, split, check=True)
    if source == "clevrer":
        from slotssm.data.readers.clevrer import ClevrerDataset

        return ClevrerDataset(root, split, annotations=False)
    if source == "bouncing_balls_h5":
        from slotssm.data.readers.bouncing_balls_h5 import BouncingBallsH5Dataset

        return BouncingBallsH5Dataset(root, split)
    raise ValueError(f"data.source: no reader named {source!r}; readers: {', '.join(SPLITS)}")


def fit_item(item: dict[str, np.ndarray], req: SplitRequest, resize: str, where: str) -> dict[str, np.ndarray]:
    """One video as read -> the first T frames at image_size, only the requested keys (see the module rule)."""
    image = "video" if "video" in item else "frames"
    t = len(item[image])
    if t < req.num_frames:
        raise ValueError(f"{where}: {t} frames, fewer than the {req.num_frames} this run needs "
                         f"({req.frames_field}); use longer videos or lower {req.frames_field}")
    h, w = item[image].shape[1:3]
    out = {k: (v[: req.num_frames] if k in _TIME_KEYS else v) for k, v in item.items()}
    for key in ("video", "frames", "segmentations", "ids"):
        if key in out:
            out[key] = fit_frames(out[key], req.image_size, resize, nearest=key in ("segmentations", "ids"))
    if "positions" in out:
        out["positions"] = fit_positions(out["positions"], h, w, req.image_size, resize)
    if "visibility" in out and "segmentations" in out:  # objects cropped away are no longer visible
        k = out["visibility"].shape[-1]
        out["visibility"] = (out["segmentations"][..., None] == np.arange(1, k + 1)).any(axis=(1, 2))
    if req.grey and "video" in out:
        out["frames"] = to_grey(out.pop("video"))
    if not req.grey and "frames" in out and "video" in req.keys:
        out["video"] = np.repeat(out.pop("frames")[..., None], 3, axis=-1)
    return {k: np.asarray(v, order="C") for k, v in out.items() if k in req.keys}  # (ascontiguousarray makes 0-d 1-d)


def _split_files(source: str, root: Path, split: str) -> list[Path]:
    """The files and folders a split of `source` is read from (what its cache's fingerprint covers)."""
    if source == "movi":
        from slotssm.data.readers.movi_tfds import find_shards

        return find_shards(root, split) or [root / split]
    if source == "cater":
        return [root / "lists" / "localize" / f"{split}.txt", root / "videos"]
    if source == "clevrer":
        return [root / f"video_{split}"]
    return [root]  # one HDF5 file holds every split


def _fingerprint(paths: list[Path], skip: Path | None) -> str:
    """sha1 of (path, size, mtime) of every file in `paths` (folders walked), `skip`'s subtree left out."""
    rows = []
    for top in paths:
        if top.is_file():
            st = top.stat()
            rows.append(f"{top}\t{st.st_size}\t{st.st_mtime_ns}")
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            if skip is not None:
                dirnames[:] = [d for d in dirnames if (here / d).resolve() != skip]
            for name in filenames:
                st = (here / name).stat()
                rows.append(f"{here / name}\t{st.st_size}\t{st.st_mtime_ns}")
    return hashlib.sha1("\n".join(sorted(rows)).encode()).hexdigest()


def _cached_split(source, root, split, req, resize, max_objects, data_dir):
    """Convert (once) a split of a reader source into a store under data_dir; return its VideoDataset."""
    from tqdm.auto import tqdm

    from slotssm.data.dataset import VideoDataset
    from slotssm.data.store import MANIFEST, StoreWriter, read_manifest

    root, data_dir = Path(root).resolve(), Path(data_dir)
    if not root.exists():
        raise FileNotFoundError(f"data.root: {root} does not exist")
    params = {"source": source, "root": str(root), "split": split, "request": asdict(req), "resize": resize,
              "max_objects": max_objects, "cache_version": CACHE_VERSION}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    cache = data_dir / f"{source}-{split}-{digest}"
    fingerprint = _fingerprint(_split_files(source, root, split), skip=data_dir.resolve())
    if (cache / MANIFEST).is_file():
        have = read_manifest(cache).get("params", {})
        if have.get("fingerprint") != fingerprint:
            raise ValueError(f"{cache}: converted from {root} when its files were different (added, removed or "
                             f"modified since); remove {cache} to convert it again")
        return VideoDataset(cache)
    reader = open_reader(source, root, split, max_objects)
    writer = StoreWriter(cache, len(reader), DIMS)
    try:
        for i in tqdm(range(len(reader)), desc=f"{source} {split} -> {cache.name}", unit="video", disable=None):
            writer.write(i, fit_item(reader.read(i), req, resize, reader.describe(i)))
    except BaseException:
        writer.abort()
        raise
    images = [k for k in ("video", "frames", "segmentations", "ids") if k in writer.keys]
    writer.close({"generator": f"source:{source}", "version": CACHE_VERSION, "params": {**params,
                  "fingerprint": fingerprint}, "seed": 0, "images": images})
    return VideoDataset(cache)


def folder_split(root: str | Path, num_val: int) -> tuple[list[int], list[int]]:
    """Indices (train, val) of a ``slotssm data import`` store: the last max(1, min(num_val, n // 5)) videos are
    held out for validation, the rest train (at least 2 videos needed)."""
    from slotssm.data.store import read_manifest

    manifest = read_manifest(root)
    if manifest.get("generator") != "import":
        raise ValueError(f"data.root: {root} is not a store written by `slotssm data import` "
                         f"(its manifest says generator={manifest.get('generator')!r})")
    n = int(manifest["num_videos"])
    if n < 2:
        raise ValueError(f"data.root: {root} holds {n} video; a training and a validation split need at least 2")
    n_val = max(1, min(num_val, n // 5))
    return list(range(n - n_val)), list(range(n - n_val, n))


class _FolderTransform:
    """Tensor item of an imported store -> the request's keys at image_size (picklable for DataLoader workers)."""

    def __init__(self, req: SplitRequest, where: str):
        self.req, self.where = req, where

    def __call__(self, item):
        import torch

        arrays = {k: v.numpy() for k, v in item.items()}
        # The store is already square: "stretch" only rescales it when image_size differs from the imported size.
        return {k: torch.from_numpy(v) for k, v in fit_item(arrays, self.req, "stretch", self.where).items()}


def _folder_splits(root, num_val, train_req, val_req):
    from torch.utils.data import Subset

    from slotssm.data.dataset import VideoDataset

    train_idx, val_idx = folder_split(root, num_val)
    sets = []
    for req, idx in ((train_req, train_idx), (val_req, val_idx)):
        ds = VideoDataset(root, keys=["video"], transform=_FolderTransform(req, str(root)))
        if ds.num_frames() < req.num_frames:
            raise ValueError(f"data.root: {root} holds videos of {ds.num_frames()} frames, fewer than the "
                             f"{req.num_frames} this run needs ({req.frames_field}); import with --frames "
                             f"{req.num_frames} or more")
        ds.frame_indices = list(range(req.num_frames))
        sets.append(Subset(ds, idx))
    return tuple(sets)


def source_splits(task: str, data: Any, data_dir: str | Path, train: SplitRequest, val: SplitRequest):
    """(train, val) datasets of a task config `data` whose data.source is a reader or "folder".

    `data` needs the fields source, root, resize, and for movi max_objects, for folder num_val. A root given with
    data.source=generated is an error (it would be ignored).
    """
    check_source(task, data.source, data.resize, data.root)
    if data.source == "folder":
        return _folder_splits(data.root, getattr(data, "num_val", 1), train, val)
    k = getattr(data, "max_objects", 24)
    train_split, val_split = SPLITS[data.source]
    return (_cached_split(data.source, data.root, train_split, train, data.resize, k, data_dir),
            _cached_split(data.source, data.root, val_split, val, data.resize, k, data_dir))


_NOTED: set[tuple[str, ...]] = set()


def note_skipped(task: str, metrics: tuple[str, ...], reason: str) -> None:
    """Say once per process that `metrics` of `task` are not computed, and why (a label the source lacks)."""
    key = (task, *metrics, reason)
    if key not in _NOTED:
        _NOTED.add(key)
        log.warning("%s: skipping %s: %s", task, ", ".join(metrics), reason)
