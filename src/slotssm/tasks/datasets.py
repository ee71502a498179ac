"""Generated datasets of the tasks, cached under the data directory in folders named by what they hold."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from slotssm.data import VideoDataset, get_or_generate

VAL_SEED_OFFSET = 1_000_003  # validation videos come from a seed far from the training seed


def dataset_root(data_dir: Path, generator: str, params: dict, num_videos: int, seed: int) -> Path:
    """A directory named by the generator and a digest of what it holds: different params never collide."""
    key = json.dumps({"params": params, "num": num_videos, "seed": seed}, sort_keys=True, default=list)
    return Path(data_dir) / f"{generator}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def generated_split(data_dir, generator: str, params: dict, num_videos: int, seed: int, keys=None, **kw) -> VideoDataset:
    """Generate (once) and memory-map `num_videos` videos of `generator`."""
    root = dataset_root(data_dir, generator, params, num_videos, seed)
    get_or_generate(generator, root, num_videos, seed, progress=False, **params)
    return VideoDataset(root, keys=keys, **kw)
