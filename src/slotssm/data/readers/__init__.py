"""Readers for real datasets a user has on disk (MOVi exported from TFDS, CATER, CLEVRER).

Each reader documents the on-disk layout it expects and returns the same keys as the matching generator.
They need only numpy and imageio (video files other than frames/.npy need an imageio video plugin).
"""

from slotssm.data.readers.cater import CaterDataset
from slotssm.data.readers.clevrer import ClevrerDataset
from slotssm.data.readers.movi import MoviDataset

__all__ = ["MoviDataset", "CaterDataset", "ClevrerDataset"]
