"""MOVi (Kubric) straight from its TFDS distribution: TFRecord shards of `tf.train.Example`s, no TensorFlow.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here H, W are image height and width in pixels, K object slots.

Expected layout: the folder TFDS writes for one config and version, e.g. ``movi_a/128x128/1.0.0/``, holding
``movi_a-train.tfrecord-00000-of-01024`` ... and ``movi_a-validation.tfrecord-*`` (any ``*-<split>.tfrecord*``
file directly in `root` belongs to the split; ``dataset_info.json`` and ``features.json`` are not needed).

The schema is Kubric's MOVi builder (challenges/movi/movi_a.py ... movi_e.py, `_info`): a `tfds.features.
FeaturesDict` that TFDS flattens with "/" into one Example feature per leaf (ints and class labels as int64 lists,
floats as float lists, images as PNG bytes). The features read here, field by field:

- ``video``: `Video(shape=(s, h, w, 3))`, s PNG-encoded RGB frames (bytes list of length s) -> video (T, H, W, 3).
- ``segmentations``: `Sequence(Image(shape=(h, w, 1), dtype=uint8), length=s)`, s PNGs, 0 background and
  i + 1 for ``instances[i]`` -> segmentations (T, H, W).
- ``metadata/num_frames``, ``metadata/height``, ``metadata/width``: int64 scalars, checked against the frames;
  ``metadata/num_instances`` (uint16 -> int64) -> num_objects; ``metadata/video_name`` (text) names the video.
- ``instances/shape_label``, ``instances/color_label``, ``instances/size_label``: `ClassLabel`s, one int64 per
  instance (MOVi-A: shape cube/cylinder/sphere, colour blue/brown/cyan/gray/green/purple/red/yellow, size
  small/large; MOVi-B's builder has shape_label only, 11 shapes) -> shape, color_id, size; -1 where a
  variant's records have no such label.
- ``instances/color``: `Tensor(shape=(3,), float32)` per instance, RGB in [0, 1] -> color (K, 3) uint8.
- ``instances/image_positions``: `Tensor(shape=(s, 2), float32)` per instance, "normalized (0, 1) image-space
  (2D) coordinates of the center of mass" from `camera.project_point(...)[:2]`, first coordinate horizontal
  -> positions (T, K, 2) pixels as (x, y); without it, the centroid of each mask.

Depth, flow, normals, object coordinates, camera and collision events are in the records but not read. Keys per item
are those of `slotssm.data.readers.MoviDataset` (`movi_item`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slotssm.data.readers.movi import MoviReader, movi_item
from slotssm.data.readers.tfrecord import index_records, parse_example, read_record

__all__ = ["MoviTFRecordDataset", "find_shards", "decode_pngs"]

_LABELS = {"shape_label": "instances/shape_label", "color_label": "instances/color_label",
           "size_label": "instances/size_label"}
_READ = ("video", "segmentations", "metadata/num_frames", "metadata/height", "metadata/width",
         "metadata/num_instances", *_LABELS.values(), "instances/color", "instances/image_positions")


def find_shards(root: str | Path, split: str) -> list[Path]:
    """The TFRecord shards of `split` directly in `root` (``*-<split>.tfrecord*``), sorted by name."""
    root = Path(root)
    return sorted(p for p in root.glob(f"*-{split}.tfrecord*") if p.is_file())


def decode_pngs(frames: list[bytes], where: str) -> np.ndarray:
    """PNG-encoded frames -> (T, H, W, C) uint8."""
    import imageio.v3 as iio

    try:
        out = np.stack([np.asarray(iio.imread(f, extension=".png")) for f in frames])
    except (OSError, ValueError) as err:
        raise ValueError(f"{where}: cannot decode a PNG frame ({err})") from err
    return out[..., None] if out.ndim == 3 else out


def _scalar(ex: dict, key: str, where: str) -> int:
    value = ex.get(key)
    if value is None or len(value) != 1:
        raise ValueError(f"{where}: feature {key!r} missing or not a scalar; is this a MOVi TFDS shard?")
    return int(value[0])


class MoviTFRecordDataset(MoviReader):
    """The videos of one split of a MOVi TFDS folder (see the module docstring), in shard and record order.

    Opening indexes every record's position (reading 12 bytes per record; a truncated or corrupted shard is an
    error naming it); items are read, checksum-verified and decoded on access. The arguments are `MoviReader`'s
    (max_objects: K; MOVi-A/B have at most 10 objects, MOVi-C..E up to 23).
    """

    def _open(self, root: str | Path, split: str) -> None:
        self.shards = find_shards(root, split)
        if not self.shards:
            raise FileNotFoundError(f"{root}: no TFRecord shards of split {split!r} (expected *-{split}.tfrecord*)")
        self.records = [(shard, off, n) for shard in self.shards for off, n in index_records(shard)]
        if not self.records:
            raise ValueError(f"{root}: the shards of split {split!r} hold no records")

    def __len__(self) -> int:
        return len(self.records)

    def describe(self, index: int) -> str:
        """Where item `index` comes from (for error messages)."""
        shard, offset, _ = self.records[index]
        return f"{shard} (record at byte {offset - 12})"

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Item `index` as numpy arrays (all frames)."""
        shard, offset, length = self.records[index]
        where = self.describe(index)
        ex = parse_example(read_record(shard, offset, length), where, keys=_READ)
        for key in ("video", "segmentations"):
            if key not in ex or not isinstance(ex[key], list):
                raise ValueError(f"{where}: no {key!r} frames; is this a MOVi TFDS shard?")
        video, seg = decode_pngs(ex["video"], where)[..., :3], decode_pngs(ex["segmentations"], where)[..., 0]
        t, h, w = _scalar(ex, "metadata/num_frames", where), _scalar(ex, "metadata/height", where), _scalar(
            ex, "metadata/width", where)
        if video.shape[:3] != (t, h, w) or seg.shape != (t, h, w):
            raise ValueError(f"{where}: metadata says {t} frames of {h}x{w}, the video has {video.shape[:3]} and "
                             f"the segmentations {seg.shape}")
        num = _scalar(ex, "metadata/num_instances", where)
        instances: list[dict[str, Any]] = [{} for _ in range(num)]
        for name, key in _LABELS.items():
            if key in ex:
                for inst, value in zip(instances, self._per_instance(ex, key, num, (), where)):
                    inst[name] = int(value)
        if "instances/color" in ex:
            for inst, value in zip(instances, self._per_instance(ex, "instances/color", num, (3,), where)):
                inst["color"] = value
        if "instances/image_positions" in ex:
            pos = self._per_instance(ex, "instances/image_positions", num, (t, 2), where)
            for inst, value in zip(instances, pos):
                inst["image_positions"] = value
        return movi_item(video, seg, instances, self.max_objects, where)

    @staticmethod
    def _per_instance(ex: dict, key: str, num: int, shape: tuple[int, ...], where: str) -> np.ndarray:
        values = np.asarray(ex[key])
        if values.size != num * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{where}: feature {key!r} has {values.size} values, expected {num} x {shape}")
        return values.reshape(num, *shape)
