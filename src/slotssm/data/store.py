"""Datasets as files: one .npy per array plus manifest.json; generated once, memory-mapped, never silently redone.

Layout of a dataset directory::

    manifest.json     {"format", "generator", "version", "params", "seed", "num_videos", "slotssm_version",
                       "images": [...], "arrays": {key: {"file", "shape", "dtype", "dims", "sha256"}}}
    <key>.npy         one array per key, video axis first (except "static" arrays such as a palette)

Files are written under temporary names and renamed; the manifest is written last, so a directory with a manifest
is complete. A missing, truncated or mismatching file is an error naming that file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from slotssm import __version__
from slotssm.config import atomic_write_text, read_json_file
from slotssm.data.registry import generate, get_spec, params_to_json, resolve_params

__all__ = [
    "MANIFEST", "save", "load", "read_manifest", "generate_to_dir", "get_or_generate", "sha256_file", "StoreWriter",
]

MANIFEST = "manifest.json"
FORMAT = 1
_BATCH_BYTES = 256 * 2**20  # aim for batches of about this many bytes when the batch size is automatic


def sha256_file(path: str | Path, chunk: int = 16 * 2**20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _entry(path: Path, arr_shape: tuple[int, ...], dtype: np.dtype, dims: list[str] | None) -> dict[str, Any]:
    return {"file": path.name, "shape": list(arr_shape), "dtype": np.dtype(dtype).str, "dims": dims,
            "sha256": sha256_file(path)}


def _meta_dims(meta: dict[str, Any], key: str) -> list[str] | None:
    dims = meta.get("dims", {}).get(key)
    return list(dims) if dims is not None else None


def save(arrays: dict[str, np.ndarray], root: str | Path, manifest_meta: dict[str, Any]) -> dict[str, Any]:
    """Write every array as <root>/<key>.npy and then manifest.json; returns the manifest.

    manifest_meta: generator, version, params, seed, num_videos (and optionally dims {key: axis names}, images),
    stored as given (params should be JSON-compatible).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # the directory is incomplete until the new manifest lands
    entries = {}
    for key, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        path = root / f"{key}.npy"
        tmp = root / f".{key}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
        entries[key] = _entry(path, arr.shape, arr.dtype, _meta_dims(manifest_meta, key))
    meta = {k: v for k, v in manifest_meta.items() if k != "dims"}
    manifest = {"format": FORMAT, **meta, "slotssm_version": __version__, "arrays": entries}
    _write_json(root / MANIFEST, manifest)
    return manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of dataset directory `root`; missing or unreadable is an error naming the file."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; generate the dataset first (slotssm data generate NAME ...)")
    manifest = read_json_file(path)
    if not isinstance(manifest, dict) or "arrays" not in manifest:
        raise ValueError(f"{path}: not a dataset manifest (no 'arrays' field)")
    _check_paths(path, manifest["arrays"])
    return manifest


def _check_paths(path: Path, entries: Any) -> None:
    """Every entry's "file" is a relative path inside the dataset root: checked before anything is opened.

    Resolved (symlinks followed, only stat'ed) so that neither ``../..`` nor a link out of the root gets through.
    """
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: 'arrays' must map keys to entries, got {type(entries).__name__}")
    root = path.parent.resolve()
    for key, entry in entries.items():
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str) or not file:
            raise ValueError(f"{path}: arrays.{key}.file: expected a file name, got {file!r}")
        if Path(file).is_absolute() or not (root / file).resolve().is_relative_to(root):
            raise ValueError(f"{path}: arrays.{key}.file: {file!r} is outside the dataset root {root}")


def _check_file(path: Path, entry: dict[str, Any], verify: bool) -> None:
    """Header, size and (with verify) checksum of one .npy file against its manifest entry."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (listed in {MANIFEST})")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = read_header[version](f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from err
    if list(shape) != list(entry["shape"]) or dtype.str != np.dtype(entry["dtype"]).str or fortran:
        raise ValueError(
            f"{path}: holds {dtype.str} {list(shape)}, the manifest says {entry['dtype']} {entry['shape']}"
        )
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise ValueError(f"{path}: {what}: {size} bytes, expected {expected}")
    if verify and sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path}: sha256 differs from the manifest (the file changed after it was written)")


def load(root: str | Path, verify: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Memory-map every array of dataset `root`. Returns ({key: read-only np.memmap}, manifest).

    Always checks each file's presence, header (shape, dtype) and size; `verify=True` also checks sha256.
    """
    root = Path(root)
    manifest = read_manifest(root)
    arrays = {}
    for key, entry in manifest["arrays"].items():
        path = root / entry["file"]
        _check_file(path, entry, verify)
        arrays[key] = np.load(path, mmap_mode="r", allow_pickle=False)
    return arrays, manifest


def _auto_batch(first: dict[str, np.ndarray], static: frozenset[str], count: int) -> int:
    per_video = sum(a.nbytes for k, a in first.items() if k not in static) / max(count, 1)
    return int(np.clip(_BATCH_BYTES // max(per_video, 1), 1, 1024))


def generate_to_dir(
    name: str,
    root: str | Path,
    num_videos: int,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    **params: Any,
) -> dict[str, Any]:
    """Generate a dataset in batches straight into <root>/<key>.npy (memory-mapped) and write its manifest.

    The bytes do not depend on batch_size (each video's randomness comes from (seed, video index)).
    Returns the manifest.
    """
    from tqdm.auto import tqdm

    spec = get_spec(name)
    p = resolve_params(name, params)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    outs: dict[str, np.ndarray] = {}
    statics: dict[str, np.ndarray] = {}
    bar = tqdm(total=num_videos, desc=f"{name}", unit="video", disable=not progress)
    done, size = 0, batch_size or min(8, num_videos)
    while done < num_videos:
        count = min(size, num_videos - done)
        batch = generate(name, count, seed, offset=done, **p)
        for key, arr in batch.items():
            if key in spec.static:
                if key in statics and not np.array_equal(statics[key], arr):
                    raise RuntimeError(f"generator {name!r}: static array {key!r} differs between batches")
                statics[key] = arr
                continue
            if key not in outs:
                outs[key] = np.lib.format.open_memmap(
                    root / f".{key}.npy.tmp", mode="w+", dtype=arr.dtype, shape=(num_videos, *arr.shape[1:])
                )
            outs[key][done : done + count] = arr
        if batch_size is None and done == 0:
            size = _auto_batch(batch, spec.static, count)
        done += count
        bar.update(count)
    bar.close()
    entries = {}
    for key, arr in outs.items():
        arr.flush()
        shape, dtype = arr.shape, arr.dtype
        del arr
        os.replace(root / f".{key}.npy.tmp", root / f"{key}.npy")
        entries[key] = _entry(root / f"{key}.npy", shape, dtype, list(spec.dims[key]))
    outs.clear()
    for key, arr in statics.items():
        np.save(root / f"{key}.npy", arr, allow_pickle=False)
        entries[key] = _entry(root / f"{key}.npy", arr.shape, arr.dtype, list(spec.dims[key]))
    manifest = {
        "format": FORMAT, "generator": name, "version": spec.version, "params": params_to_json(p), "seed": int(seed),
        "num_videos": int(num_videos), "slotssm_version": __version__, "images": list(spec.images),
        "arrays": {k: entries[k] for k in spec.dims if k in entries},
    }
    _write_json(root / MANIFEST, manifest)
    return manifest


def _first_difference(have: Any, want: Any, field: str) -> str | None:
    if isinstance(have, dict) and isinstance(want, dict):
        for key in sorted(set(have) | set(want)):
            diff = _first_difference(have.get(key, "<absent>"), want.get(key, "<absent>"), f"{field}.{key}")
            if diff:
                return diff
        return None
    return None if have == want else f"{field}: the directory has {have!r}, requested {want!r}"


def get_or_generate(
    name: str,
    root: str | Path,
    num_videos: int,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    verify: bool = False,
    **params: Any,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load dataset `root` if its manifest matches (generator, version, params, seed, num_videos), else generate it.

    A manifest that differs is a ValueError naming the first differing field (e.g. ``params.num_objects``), never
    a silent regeneration. Returns the same as `load`.
    """
    spec = get_spec(name)
    want = {"generator": name, "version": spec.version, "params": params_to_json(resolve_params(name, params)),
            "seed": int(seed), "num_videos": int(num_videos)}
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Runs started together (`slotssm reproduce --jobs 2`, torchrun ranks) ask for the same dataset at once: the
    # first generates it while the others wait, then they load it. Without the lock they wrote the same temporary
    # files and all but one failed. The lock file sits beside the directory and is released if its holder dies.
    with FileLock(root.parent / f".{root.name}.lock"):
        if (root / MANIFEST).is_file():
            have = read_manifest(root)
            for field, value in want.items():
                diff = _first_difference(have.get(field, "<absent>"), value, field)
                if diff:
                    raise ValueError(f"{root / MANIFEST}: {diff}; use another directory or remove this one")
            return load(root, verify=verify)
        generate_to_dir(name, root, num_videos, seed, batch_size=batch_size, progress=progress, **params)
    return load(root)


class StoreWriter:
    """Write a dataset item by item into <root>/<key>.npy (memory-mapped), then its manifest: for real videos.

        writer = StoreWriter(root, num_videos, dims={"video": ("video", "time", "height", "width", "rgb")})
        for i, item in enumerate(items):       # item: {key: array of one video}, the same shapes for every video
            writer.write(i, item)
        manifest = writer.close({"generator": "import", "params": {...}, "seed": 0, "images": ["video"]})

    Every key of the first item must be in `dims`, and every later item must have the same keys, shapes and dtypes
    (an error naming the key otherwise). Files are written under temporary names; `close` renames them and writes
    the manifest last, so a directory with a manifest is complete. `abort` removes the temporary files.
    """

    def __init__(self, root: str | Path, num_videos: int, dims: dict[str, tuple[str, ...]]):
        if num_videos < 1:
            raise ValueError(f"num_videos: expected >= 1, got {num_videos}")
        self.root, self.num_videos, self.dims = Path(root), int(num_videos), dict(dims)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MANIFEST).unlink(missing_ok=True)
        self._outs: dict[str, np.ndarray] = {}

    def write(self, index: int, item: dict[str, np.ndarray]) -> None:
        if not self._outs:
            for key, arr in item.items():
                if key not in self.dims:
                    raise ValueError(f"StoreWriter: key {key!r} has no dims; known: {', '.join(self.dims)}")
                arr = np.asarray(arr)
                self._outs[key] = np.lib.format.open_memmap(
                    self.root / f".{key}.npy.tmp", mode="w+", dtype=arr.dtype, shape=(self.num_videos, *arr.shape))
        if set(item) != set(self._outs):
            raise ValueError(f"StoreWriter: video {index} has keys {sorted(item)}, the first had {sorted(self._outs)}")
        for key, arr in item.items():
            out, arr = self._outs[key], np.asarray(arr)
            if arr.shape != out.shape[1:] or arr.dtype != out.dtype:
                raise ValueError(f"StoreWriter: video {index} has {key} {arr.dtype} {arr.shape}, "
                                 f"the first had {out.dtype} {out.shape[1:]}")
            out[index] = arr

    @property
    def keys(self) -> list[str]:
        """The keys written so far (those of the first item)."""
        return list(self._outs)

    def close(self, manifest_meta: dict[str, Any]) -> dict[str, Any]:
        """Rename the files into place and write the manifest (num_videos, arrays and format added); return it."""
        entries = {}
        for key, arr in self._outs.items():
            arr.flush()
            shape, dtype = arr.shape, arr.dtype
            del arr
            os.replace(self.root / f".{key}.npy.tmp", self.root / f"{key}.npy")
            entries[key] = _entry(self.root / f"{key}.npy", shape, dtype, list(self.dims[key]))
        self._outs.clear()
        manifest = {"format": FORMAT, **manifest_meta, "num_videos": self.num_videos,
                    "slotssm_version": __version__, "arrays": entries}
        _write_json(self.root / MANIFEST, manifest)
        return manifest

    def abort(self) -> None:
        """Drop what was written (the temporary files); the directory keeps no manifest."""
        for key in list(self._outs):
            del self._outs[key]
            (self.root / f".{key}.npy.tmp").unlink(missing_ok=True)
