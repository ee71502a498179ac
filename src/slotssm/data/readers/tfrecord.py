"""TFRecord files and `tf.train.Example` records without TensorFlow: framing with CRC checks, parsing, writing.

A TFRecord file is a sequence of records, each::

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

with ``masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32)`` for ``c = crc32c(x)``. TFDS stores one
serialized `tf.train.Example` per record: a map from feature name to a list of bytes, float32 or int64 values
(`tensorflow/core/example/example.proto` and `feature.proto`).

Why a reader of our own (about 60 lines) rather than the `tfrecord` package: that package does not verify either
checksum, and its errors do not name the file, so a truncated or corrupted shard of a 100 GB dataset would fail
somewhere in training as a bare RuntimeError or decode garbage. Here every record is checked (the CRC32C comes from
the `crc32c` package, a C implementation; pure Python would take seconds per MOVi record) and every error names the
shard and the byte offset. Examples are parsed by `protobuf` (a dependency of tensorboard already) from message
classes built at import from the descriptor below, so no generated code or TensorFlow is needed. Both packages are
in the optional extra ``slotssm[datasets]``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from slotssm.data.readers.common import require

__all__ = ["index_records", "read_record", "iter_records", "write_records", "parse_example", "make_example"]

_HEADER = 12  # uint64 length + uint32 crc of the length
_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> int:
    crc32c = require("crc32c", "crc32c", "checking TFRecord checksums")
    c = crc32c.crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def index_records(path: str | Path) -> list[tuple[int, int]]:
    """(offset of the data, length) of every record in the file; a truncated or corrupted header names the file."""
    path = Path(path)
    size = path.stat().st_size
    out, pos = [], 0
    with open(path, "rb") as f:
        while pos < size:
            header = f.read(_HEADER)
            if len(header) < _HEADER:
                raise ValueError(f"{path}: truncated at byte {pos} (a record header needs {_HEADER} bytes)")
            length, crc = struct.unpack("<QI", header)
            if _masked_crc(header[:8]) != crc:
                raise ValueError(f"{path}: corrupted record header at byte {pos} (length checksum mismatch)")
            end = pos + _HEADER + length + 4
            if end > size:
                raise ValueError(f"{path}: truncated: the record at byte {pos} needs {end} bytes, the file has {size}")
            out.append((pos + _HEADER, length))
            f.seek(end)
            pos = end
    return out


def read_record(path: str | Path, offset: int, length: int) -> bytes:
    """The data of the record at (offset, length) from `index_records`, checksum verified."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length + 4)
    if len(data) != length + 4:
        raise ValueError(f"{path}: truncated: the record at byte {offset - _HEADER} ends past the end of the file")
    (crc,) = struct.unpack("<I", data[length:])
    if _masked_crc(data[:length]) != crc:
        raise ValueError(f"{path}: corrupted record at byte {offset - _HEADER} (data checksum mismatch)")
    return data[:length]


def iter_records(path: str | Path) -> Iterator[bytes]:
    """Every record of a TFRecord file, in order, checksums verified."""
    for offset, length in index_records(path):
        yield read_record(path, offset, length)


def write_records(path: str | Path, records: Iterable[bytes]) -> None:
    """Write records as a TFRecord file (the same framing TensorFlow writes)."""
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data)))


def _example_class():
    """The `Example` message class, built once from a descriptor equivalent to TensorFlow's example.proto."""
    global _EXAMPLE
    if _EXAMPLE is not None:
        return _EXAMPLE
    require("google.protobuf", "protobuf", "parsing tf.train.Example records")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="slotssm_example.proto", package="slotssm.tfexample", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", F.TYPE_BYTES), ("FloatList", F.TYPE_FLOAT), ("Int64List", F.TYPE_INT64)):
        fd.message_type.add(name=name).field.add(name="value", number=1, label=F.LABEL_REPEATED, type=kind)
    feature = fd.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, cls) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                          ("int64_list", "Int64List")), 1):
        feature.field.add(name=name, number=number, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                          type_name=f".slotssm.tfexample.{cls}", oneof_index=0)
    features = fd.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
    entry.field.add(name="value", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                    type_name=".slotssm.tfexample.Feature")
    features.field.add(name="feature", number=1, label=F.LABEL_REPEATED, type=F.TYPE_MESSAGE,
                       type_name=".slotssm.tfexample.Features.FeatureEntry")
    fd.message_type.add(name="Example").field.add(name="features", number=1, label=F.LABEL_OPTIONAL,
                                                  type=F.TYPE_MESSAGE, type_name=".slotssm.tfexample.Features")
    pool = descriptor_pool.DescriptorPool()  # a private pool: no clash with a TensorFlow imported alongside
    pool.Add(fd)
    _EXAMPLE = message_factory.GetMessageClass(pool.FindMessageTypeByName("slotssm.tfexample.Example"))
    return _EXAMPLE


_EXAMPLE = None


def parse_example(data: bytes, where: str = "record", keys=None) -> dict[str, list[bytes] | np.ndarray]:
    """A serialized tf.train.Example -> {name: list of bytes | float32 array | int64 array}.

    keys: convert only these features (a MOVi record also holds flow fields of s x h x w x 2 int64 values that
    converting would cost more than the frames); None converts all.
    """
    from google.protobuf.message import DecodeError

    example = _example_class()()
    try:
        example.ParseFromString(data)
    except DecodeError as err:
        raise ValueError(f"{where}: not a tf.train.Example ({err})") from err
    out: dict[str, list[bytes] | np.ndarray] = {}
    features = example.features.feature
    for name in features if keys is None else [k for k in keys if k in features]:
        feature = features[name]
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[name] = list(feature.bytes_list.value)
        elif kind == "float_list":
            out[name] = np.asarray(feature.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            out[name] = np.asarray(feature.int64_list.value, dtype=np.int64)
        else:
            out[name] = np.zeros(0, np.float32)  # an empty feature: TFDS writes these for empty sequences
    return out


def make_example(features: dict[str, list[bytes] | np.ndarray | list]) -> bytes:
    """{name: bytes list | float array | int array} -> a serialized tf.train.Example (dtype picks the list kind)."""
    example = _example_class()()
    for name, values in features.items():
        feature = example.features.feature[name]
        if isinstance(values, (list, tuple)) and values and isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
            continue
        arr = np.asarray(values).ravel()
        if arr.dtype.kind in "iub":
            feature.int64_list.value.extend(arr.astype(np.int64).tolist())
        elif arr.dtype.kind == "f":
            feature.float_list.value.extend(arr.astype(np.float32).tolist())
        else:
            raise TypeError(f"make_example: feature {name!r} has values of dtype {arr.dtype}")
    return example.SerializeToString()
