"""CLEVRER (Yi et al. 2020) videos and object annotations, read into the keys of the generators.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels, K object slots.

Expected layout (the official zips unpacked; .mp4 files are decoded with PyAV, from ``slotssm[datasets]``;
sub-folders such as ``video_00000-01000/`` are searched recursively)::

    <root>/video_<split>/**/video_00000.npy | video_00000/00000.png ... | video_00000.mp4
    <root>/annotation_<split>/**/annotation_00000.json     optional (absent for the test split)

An annotation holds "object_property" [{"object_id", "color", "material", "shape"}] and "motion_trajectory"
[{"frame_id", "objects": [{"object_id", "location" [x, y, z], "inside_camera_view"}]}].

Keys per item (tensors): video (T, H, W, 3) uint8; with annotations also shape (K,) int64 index into SHAPES,
color_id (K,) index into the CLEVR colours (`shapes_video.COLOR_NAMES`), material (K,) index into MATERIALS
(-1 absent), positions (T, K, 3) float32 world coordinates (0 where not annotated), visibility (T, K) bool
("inside_camera_view"), num_objects () int64.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from slotssm.data.dataset import to_tensor
from slotssm.data.readers.common import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_video, select_frames
from slotssm.data.shapes_video import COLOR_NAMES

__all__ = ["ClevrerDataset", "SHAPES", "MATERIALS", "parse_annotation"]

SHAPES = ("cube", "sphere", "cylinder")
MATERIALS = ("rubber", "metal")
_VIDEO = re.compile(r"^video_(\d+)$")
_ANNOTATION = re.compile(r"^annotation_(\d+)$")


def _index(names: Sequence[str], value: str, what: str, path: Path) -> int:
    if value not in names:
        raise ValueError(f"{path}: unknown {what} {value!r}; expected one of {names}")
    return names.index(value)


def parse_annotation(path: str | Path, num_frames: int, max_objects: int) -> dict[str, np.ndarray]:
    """One CLEVRER annotation file -> per-object arrays padded to max_objects (see the module docstring)."""
    path = Path(path)
    ann = json.loads(path.read_text())
    props = sorted(ann.get("object_property", []), key=lambda o: o["object_id"])
    k = max_objects
    if len(props) > k:
        raise ValueError(f"{path}: {len(props)} objects, more than max_objects={k}")
    shape, color, material = np.full(k, -1), np.full(k, -1), np.full(k, -1)
    for i, obj in enumerate(props):
        if obj["object_id"] != i:
            raise ValueError(f"{path}: object ids are not 0..{len(props) - 1}")
        shape[i] = _index(SHAPES, obj["shape"], "shape", path)
        color[i] = _index(COLOR_NAMES, obj["color"], "color", path)
        material[i] = _index(MATERIALS, obj["material"], "material", path)
    positions = np.zeros((num_frames, k, 3), np.float32)
    visibility = np.zeros((num_frames, k), bool)
    for frame in ann.get("motion_trajectory", []):
        t = frame["frame_id"]
        if not 0 <= t < num_frames:
            continue  # annotations may cover more frames than a shortened export
        for obj in frame["objects"]:
            positions[t, obj["object_id"]] = obj["location"]
            visibility[t, obj["object_id"]] = bool(obj.get("inside_camera_view", True))
    return {"shape": shape.astype(np.int64), "color_id": color.astype(np.int64), "material": material.astype(np.int64),
            "positions": positions, "visibility": visibility, "num_objects": np.int64(len(props))}


class ClevrerDataset(Dataset):
    """CLEVRER videos of one split, sorted by video index (see the module docstring for the layout).

    annotations: read the object annotations (a video without one is an error naming it).
    max_objects: K (CLEVRER scenes have at most 6 objects, 8 leaves room).
    frame_indices: frames to keep (a sequence or ``f(num_frames) -> indices``); transform: applied last.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        annotations: bool = True,
        max_objects: int = 8,
        frame_indices: Sequence[int] | Callable[[int], Sequence[int]] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        root = Path(root)
        vdir, adir = root / f"video_{split}", root / f"annotation_{split}"
        if not vdir.is_dir():
            raise FileNotFoundError(f"{vdir}: no such folder (expected <root>/video_<split>/)")
        videos = {}
        for p in vdir.rglob("video_*"):
            m = _VIDEO.match(p.stem if p.is_file() else p.name)
            frames_dir = p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir())
            if m and ((p.is_file() and p.suffix in VIDEO_SUFFIXES) or frames_dir):
                videos[int(m.group(1))] = p
        if not videos:
            raise FileNotFoundError(f"{vdir}: no video_<index> files or frame folders")
        self.indices = sorted(videos)
        self.videos = videos
        self.annotations = {}
        if annotations:
            found = {int(m.group(1)): p for p in adir.rglob("annotation_*.json") if (m := _ANNOTATION.match(p.stem))}
            missing = [i for i in self.indices if i not in found]
            if missing:
                raise FileNotFoundError(f"{adir}: no annotation_{missing[0]:05d}.json for {videos[missing[0]]}")
            self.annotations = found
        self.max_objects, self.frame_indices, self.transform = max_objects, frame_indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def describe(self, index: int) -> str:
        """Where item `index` comes from (for error messages)."""
        return str(self.videos[self.indices[index]])

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Item `index` as numpy arrays (all frames; the annotation's keys too when annotations=True)."""
        i = self.indices[index]
        video = read_video(self.videos[i])
        item: dict[str, np.ndarray] = {"video": video}
        if self.annotations:
            item.update(parse_annotation(self.annotations[i], len(video), self.max_objects))
        return item

    def __getitem__(self, index: int) -> Any:
        item = self.read(index)
        video = item["video"]
        idx = self.frame_indices(len(video)) if callable(self.frame_indices) else self.frame_indices
        for key in ("video", "positions", "visibility"):
            if key in item:
                item[key] = select_frames(item[key], idx)
        out = {key: to_tensor(np.asarray(v)) for key, v in item.items()}
        return self.transform(out) if self.transform is not None else out
