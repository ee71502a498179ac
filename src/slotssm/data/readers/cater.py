"""CATER snitch localisation (Girdhar & Ramanan 2020) read into the keys of the `snitch` generator.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels.

Expected layout (the official release, with the videos converted to frames or .npy unless imageio has a video
plugin)::

    <root>/videos/<name>.npy | <name>/00000.png ... | <name>.avi      (T, H, W, 3) uint8
    <root>/lists/localize/<split>.txt                                  one video per line: "<name>.avi <label>"

The label is the class of the 6x6 grid cell (0..35) where the snitch ends. Frames are returned at the stored
resolution; resize in `transform` if needed. Keys per item (tensors): video (T, H, W, 3) uint8, label () int64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from slotssm.data.dataset import to_tensor
from slotssm.data.readers.common import find_video, read_video, select_frames

__all__ = ["CaterDataset", "read_list"]


def read_list(path: str | Path) -> list[tuple[str, int]]:
    """Lines "<name>.avi <label>" -> [(name, label)]; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such list file (expected <root>/lists/localize/<split>.txt)")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            label = int(parts[1])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: expected '<video> <label>', got {line!r}") from None
        if not 0 <= label < 36:
            raise ValueError(f"{path}:{number}: label {label} outside the 36 grid classes")
        out.append((parts[0], label))
    return out


class CaterDataset(Dataset):
    """CATER videos and their localisation labels (see the module docstring for the layout).

    frame_indices: frames to keep (a sequence or ``f(num_frames) -> indices``, e.g. the paper's protocols
    `sample_frames_train` / `sample_frames_eval`); transform: applied to the item dict last.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        frame_indices: Sequence[int] | Callable[[int], Sequence[int]] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        self.root = Path(root)
        self.items = read_list(self.root / "lists" / "localize" / f"{split}.txt")
        self.frame_indices, self.transform = frame_indices, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        name, label = self.items[index]
        video = read_video(find_video(self.root / "videos", name))
        idx = self.frame_indices(len(video)) if callable(self.frame_indices) else self.frame_indices
        item = {"video": to_tensor(select_frames(video, idx)), "label": to_tensor(np.asarray(label, np.int64))}
        return self.transform(item) if self.transform is not None else item
