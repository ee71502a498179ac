"""CATER snitch localisation (Girdhar & Ramanan 2020) read into the keys of the `snitch` generator.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels.

Expected layout (the official release; .avi files are decoded with PyAV, from ``slotssm[datasets]``; frame
folders and .npy arrays need nothing more)::

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
    check: find every listed video when opening (a list entry without its video is an error naming both).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        frame_indices: Sequence[int] | Callable[[int], Sequence[int]] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        check: bool = False,
    ):
        self.root = Path(root)
        self.list_file = self.root / "lists" / "localize" / f"{split}.txt"
        self.items = read_list(self.list_file)
        if not self.items:
            raise ValueError(f"{self.list_file}: no videos listed")
        self.frame_indices, self.transform = frame_indices, transform
        self._paths: dict[int, Path] = {}
        if check:
            for i, (name, _) in enumerate(self.items):
                try:
                    self._paths[i] = find_video(self.root / "videos", name)
                except FileNotFoundError as err:
                    raise FileNotFoundError(f"{self.list_file} lists {name}, which is missing: {err}") from None

    def __len__(self) -> int:
        return len(self.items)

    def path(self, index: int) -> Path:
        """The video file or frame folder of item `index`."""
        if index not in self._paths:
            self._paths[index] = find_video(self.root / "videos", self.items[index][0])
        return self._paths[index]

    def describe(self, index: int) -> str:
        """Where item `index` comes from (for error messages)."""
        return str(self.path(index))

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Item `index` as numpy arrays (all frames): video (T, H, W, 3) uint8, label () int64."""
        return {"video": read_video(self.path(index)), "label": np.asarray(self.items[index][1], np.int64)}

    def __getitem__(self, index: int) -> Any:
        name, label = self.items[index]
        video = read_video(self.path(index))
        idx = self.frame_indices(len(video)) if callable(self.frame_indices) else self.frame_indices
        item = {"video": to_tensor(select_frames(video, idx)), "label": to_tensor(np.asarray(label, np.int64))}
        return self.transform(item) if self.transform is not None else item
