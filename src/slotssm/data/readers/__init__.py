"""Readers for real datasets a user has on disk: MOVi (TFDS shards or exported folders), CATER, CLEVRER, and the
bouncing-balls HDF5 files of Relational-NEM.

Each reader documents the on-disk layout it expects and returns the same keys as the matching generator. Frame
folders and .npy arrays need only numpy and imageio; .mp4/.avi files (PyAV), TFRecord shards (crc32c, protobuf)
and HDF5 files (h5py) need the optional extra ``pip install "slotssm[datasets]"``, named by the error when missing.
The tasks reach them through `slotssm.data.sources` (``--set data.source=NAME --set data.root=PATH``).
"""

from slotssm.data.readers.bouncing_balls_h5 import BouncingBallsH5Dataset
from slotssm.data.readers.cater import CaterDataset
from slotssm.data.readers.clevrer import ClevrerDataset
from slotssm.data.readers.movi import MoviDataset
from slotssm.data.readers.movi_tfds import MoviTFRecordDataset

__all__ = ["MoviDataset", "MoviTFRecordDataset", "CaterDataset", "ClevrerDataset", "BouncingBallsH5Dataset"]
