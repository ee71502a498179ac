"""A torch Dataset over a stored dataset directory: memory-mapped arrays, one video per item.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slotssm.data.store import load, read_manifest

__all__ = ["VideoDataset", "to_tensor"]

FrameIndices = Sequence[int] | np.ndarray | Callable[[int], Sequence[int] | np.ndarray] | None


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """A numpy array as a torch tensor: a copy (memmaps are read-only); float64 becomes float32, the rest keep dtype."""
    a = np.array(a, dtype=np.float32 if a.dtype == np.float64 else a.dtype, copy=True)
    return torch.from_numpy(a)


class VideoDataset(Dataset):
    """Item i is a dict {key: tensor} of video i of the dataset at `root` (written by `slotssm.data.save` or the CLI).

    keys: which arrays to return (default: all per-video arrays). Images and masks stay uint8; float64 arrays
    become float32; static arrays (e.g. a palette) are returned unchanged with every item.
    frame_indices: frames to keep along every "time" axis: a sequence, or a callable ``f(num_frames) -> indices``
    called per item (e.g. ``functools.partial(sample_frames_train, rng=rng)``); None keeps all frames.
    transform: optional callable applied to the item dict last.
    verify: check every file's sha256 when opening.

    Arrays are opened lazily in each process (DataLoader workers memory-map their own view).
    """

    def __init__(
        self,
        root: str | Path,
        keys: Sequence[str] | None = None,
        frame_indices: FrameIndices = None,
        transform: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        verify: bool = False,
    ):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        entries = self.manifest["arrays"]
        known = list(entries)
        self.keys = list(keys) if keys is not None else known
        unknown = [k for k in self.keys if k not in entries]
        if unknown:
            raise ValueError(f"keys: {unknown[0]!r} is not in {self.root}; available: {', '.join(known)}")
        self.frame_indices = frame_indices
        self.transform = transform
        self._verify = verify
        self._arrays: dict[str, np.ndarray] | None = None
        self._dims = {k: list(entries[k].get("dims") or []) for k in self.keys}
        self._length = int(self.manifest.get("num_videos", entries[self.keys[0]]["shape"][0]))
        if verify:
            self._open()

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays, _ = load(self.root, verify=self._verify)
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None  # reopen (memory-map) in the receiving process instead of pickling the data
        return state

    def __len__(self) -> int:
        return self._length

    def num_frames(self) -> int | None:
        """Length of the "time" axis of the first key that has one (None if no key has one)."""
        entries = self.manifest["arrays"]
        for key in self.keys:
            if "time" in self._dims[key]:
                return int(entries[key]["shape"][self._dims[key].index("time")])
        return None

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected in [0, {len(self)}), got {index}")
        arrays = self._open()
        frames = self.frame_indices
        if callable(frames):
            frames = frames(self.num_frames())
        item = {}
        for key in self.keys:
            dims = self._dims[key]
            if dims and dims[0] != "video":  # static array, the same for every video
                item[key] = to_tensor(arrays[key])
                continue
            a = arrays[key][index]
            if frames is not None and "time" in dims:
                a = np.take(a, np.asarray(frames, dtype=np.int64), axis=dims.index("time") - 1)
            item[key] = to_tensor(a)
        return self.transform(item) if self.transform is not None else item


def to_device(batch, device):
    """Tensors of a batch (a tensor, or dicts/lists/tuples of them, nested) moved to `device`; the rest unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
