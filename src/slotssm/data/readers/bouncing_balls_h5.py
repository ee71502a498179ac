"""The bouncing-balls videos of van Steenkiste et al. (R-NEM, ICLR 2018) as published: one HDF5 file per dataset.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels.

Expected layout (``balls4mass64.h5``, ``balls678mass64.h5``, ``balls3curtain64.h5``; as read by Relational-NEM's
``datasets.py``, ``InputPipeLine._open_dataset``)::

    <file>.h5
        training/    features (T, N, H, W, 1) float in [0, 1]   time first, then the sequence index
                     groups   (T, N, H, W, 1) float             0 background, i > 0 ball i (optional here)
                     collisions ...                              (not read)
        validation/  the same
        test/        the same

Relational-NEM's README says the data covers up to 50 time steps; the "64" of the names is H = W. Its `utils.py`
calls the image axes (W, H); the frames are square, and this reader keeps the stored order as rows, columns.
Keys per item (tensors): frames (T, H, W) uint8 (round(255 x features)); ids (T, H, W) uint8 from groups, when the
file has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from slotssm.data.dataset import to_tensor
from slotssm.data.readers.common import require

__all__ = ["BouncingBallsH5Dataset", "H5_SPLITS"]

H5_SPLITS = ("training", "validation", "test")


class BouncingBallsH5Dataset(Dataset):
    """Sequences of one split (``training``, ``validation`` or ``test``) of a Relational-NEM HDF5 file.

    The file is opened lazily in each process (h5py handles do not survive pickling into DataLoader workers).
    """

    def __init__(self, path: str | Path, split: str = "training"):
        self.path = Path(path)
        if split not in H5_SPLITS:
            raise ValueError(f"split: expected one of {H5_SPLITS}, got {split!r}")
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such HDF5 file (expected e.g. balls4mass64.h5)")
        self.split = split
        self._file = None
        f = self._open()
        if split not in f:
            raise ValueError(f"{self.path}: no group {split!r}; the file has {', '.join(sorted(f)) or 'none'}")
        group = f[split]
        if "features" not in group:
            raise ValueError(f"{self.path}: group {split!r} has no 'features' dataset")
        shape = group["features"].shape
        if len(shape) != 5 or shape[-1] != 1:
            raise ValueError(f"{self.path}: {split}/features has shape {shape}, expected (T, N, H, W, 1)")
        if "groups" in group and group["groups"].shape != shape:
            raise ValueError(f"{self.path}: {split}/groups has shape {group['groups'].shape}, features {shape}")
        self.num_frames, self._length = int(shape[0]), int(shape[1])
        self.has_groups = "groups" in group

    def _open(self):
        if self._file is None:
            h5py = require("h5py", "h5py", f"{self.path}: reading HDF5 files")
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as err:
                raise ValueError(f"{self.path}: not a readable HDF5 file ({err})") from err
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def __len__(self) -> int:
        return self._length

    def describe(self, index: int) -> str:
        """Where item `index` comes from (for error messages)."""
        return f"{self.path} ({self.split}/features[:, {index}])"

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Sequence `index` as numpy arrays: frames (T, H, W) uint8 [, ids (T, H, W) uint8]."""
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected in [0, {len(self)}), got {index}")
        group = self._open()[self.split]
        try:
            features = np.asarray(group["features"][:, index, ..., 0])  # (T, H, W)
            groups = np.asarray(group["groups"][:, index, ..., 0]) if self.has_groups else None
        except OSError as err:  # a truncated file fails on the read, not on opening
            raise ValueError(f"{self.describe(index)}: cannot read ({err})") from err
        if features.dtype != np.uint8:
            if features.min() < 0 or features.max() > 1:
                raise ValueError(f"{self.describe(index)}: features outside [0, 1] "
                                 f"({features.min()}..{features.max()})")
            features = np.rint(features * 255).astype(np.uint8)
        out = {"frames": features}
        if groups is not None:
            out["ids"] = np.rint(groups).astype(np.uint8)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: to_tensor(v) for key, v in self.read(index).items()}
