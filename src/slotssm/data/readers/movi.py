"""MOVi (Kubric) videos exported from TFDS to per-video files, read into the keys of `shapes_video`.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels, K object slots.

Expected layout (one folder per video; write it from ``tfds.load("movi_a/128x128")`` with numpy and imageio)::

    <root>/<split>/<video_id>/
        video.npy or rgb/00000.png ...                   (T, H, W, 3) uint8, the TFDS "video" feature
        segmentations.npy or segmentations/00000.png ... (T, H, W) uint8, 0 background, i + 1 instance i
        metadata.json                                    optional: {"instances": [{...}, ...]} with, per instance,
                                                         any of the TFDS instance features "shape_label",
                                                         "color_label", "size_label", "color" (RGB in [0, 1]),
                                                         "image_positions" (T, 2) in [0, 1] as (x, y)

Keys per item (tensors): video (T, H, W, 3) uint8; segmentations (T, H, W) uint8; shape, color_id, size (K,) int64
(the TFDS labels, -1 absent or unknown); color (K, 3) uint8 (0 absent or unknown); positions (T, K, 2) float32
pixels (from image_positions, else the mask centroid; 0 when invisible); visibility (T, K) bool (a mask pixel);
num_objects () int64 (instances in the metadata, else the largest mask label).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from slotssm.data.dataset import to_tensor
from slotssm.data.readers.common import pad_objects, read_video, select_frames

__all__ = ["MoviDataset", "MoviReader", "movi_item"]


class MoviReader(Dataset):
    """What the MOVi readers share: `read(index)` gives an item's numpy arrays (`movi_item`, every frame); indexing
    keeps `frame_indices`, makes tensors and applies `transform`. A reader opens `split` of `root` in `_open`.

    max_objects: K, the number of object slots (MOVi-A/B have at most 10 objects, MOVi-C..E up to 23).
    frame_indices: frames to keep (a sequence or ``f(num_frames) -> indices``); transform: applied to the item last.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        max_objects: int = 24,
        frame_indices: Sequence[int] | Callable[[int], Sequence[int]] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        self._open(root, split)
        self.max_objects, self.frame_indices, self.transform = max_objects, frame_indices, transform

    def _open(self, root: str | Path, split: str) -> None:
        raise NotImplementedError

    def read(self, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        item = self.read(index)
        idx = self.frame_indices(len(item["video"])) if callable(self.frame_indices) else self.frame_indices
        for key in ("video", "segmentations", "positions", "visibility"):
            item[key] = select_frames(item[key], idx)
        out = {key: to_tensor(np.asarray(v)) for key, v in item.items()}
        return self.transform(out) if self.transform is not None else out


class MoviDataset(MoviReader):
    """Videos under ``<root>/<split>/<video_id>/`` (see the module docstring), sorted by folder name; the arguments
    are `MoviReader`'s."""

    def _open(self, root: str | Path, split: str) -> None:
        folder = Path(root) / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such split folder (expected <root>/<split>/<video_id>/)")
        self.videos = sorted(p for p in folder.iterdir() if p.is_dir())
        if not self.videos:
            raise FileNotFoundError(f"{folder}: no video folders")

    def __len__(self) -> int:
        return len(self.videos)

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Item `index` as numpy arrays (all frames)."""
        folder = self.videos[index]
        video = read_video(folder / "video.npy" if (folder / "video.npy").exists() else folder / "rgb")
        seg_path = folder / "segmentations.npy" if (folder / "segmentations.npy").exists() else folder / "segmentations"
        seg = read_video(seg_path)[..., 0]  # (T, H, W)
        if seg.shape != video.shape[:3]:
            raise ValueError(f"{seg_path}: segmentations {seg.shape} do not match the video {video.shape[:3]}")
        meta_path = folder / "metadata.json"
        instances = json.loads(meta_path.read_text()).get("instances", []) if meta_path.exists() else []
        return movi_item(video, seg, instances, self.max_objects, folder)

    def describe(self, index: int) -> str:
        """Where item `index` comes from (for error messages)."""
        return str(self.videos[index])


def movi_item(video: np.ndarray, seg: np.ndarray, instances: list[dict], k: int, where) -> dict[str, np.ndarray]:
    """Frames, masks and per-instance TFDS features -> the keys of the module docstring.

    video (T, H, W, 3) uint8; seg (T, H, W) uint8 with 0 background and i + 1 for instance i; instances: one dict
    per instance with any of "shape_label", "color_label", "size_label", "color", "image_positions" (T, 2).
    """
    t, h, w = seg.shape
    num = len(instances) if instances else int(seg.max())
    if num > k or int(seg.max()) > k:
        raise ValueError(f"{where}: {max(num, int(seg.max()))} objects, more than max_objects={k}")

    def field(name: str, fill: Any) -> list:
        return [inst.get(name, fill) for inst in instances]

    masks = seg[..., None] == np.arange(1, k + 1)  # (T, H, W, K)
    visibility = masks.any(axis=(1, 2))  # (T, K)
    if instances and all("image_positions" in inst for inst in instances):
        pos = np.asarray(field("image_positions", None), dtype=np.float64).reshape(len(instances), t, 2)
        positions = np.zeros((t, k, 2))
        positions[:, : len(instances)] = pos.transpose(1, 0, 2) * (w, h)  # (T, k', 2) pixels
    else:  # centroid of each mask
        count = np.maximum(masks.sum(axis=(1, 2)), 1)  # (T, K)
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        positions = np.stack(
            [np.einsum("thwk,hw->tk", masks, xs) / count, np.einsum("thwk,hw->tk", masks, ys) / count], -1
        )
    color = [np.rint(np.asarray(c) * 255) if c is not None else (0, 0, 0) for c in field("color", None)]
    return {
        "video": video,
        "segmentations": seg,
        "shape": pad_objects(field("shape_label", -1), k, -1, np.int64),
        "color_id": pad_objects(field("color_label", -1), k, -1, np.int64),
        "size": pad_objects(field("size_label", -1), k, -1, np.int64),
        "color": pad_objects(color, k, 0, np.uint8, (3,)),
        "positions": positions.astype(np.float32),
        "visibility": visibility,
        "num_objects": np.int64(num),
    }
