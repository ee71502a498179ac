"""Datasets of slotssm: synthetic generators, an on-disk store, torch Datasets, readers for real data.

    arrays = generate("bouncing_balls", 64, seed=0, num_objects=6)      # dict of numpy arrays, deterministic
    arrays, manifest = get_or_generate("snitch", "data/snitch", 1000)   # generate once, then memory-map
    ds = VideoDataset("data/snitch", keys=["video", "label"], frame_indices=sample_frames_eval(300))

Generators: bouncing_balls (§7.1), blinking_balls (§7.2), shapes_video (§7.3), snitch (§7.4); see docs/data.md.
"""

from slotssm.data.blinking_balls import PALETTE, target_colors_from_log
from slotssm.data.registry import generate, get_spec, list_generators, resolve_params
from slotssm.data.snitch import grid_label, sample_frames_eval, sample_frames_train
from slotssm.data.store import generate_to_dir, get_or_generate, load, save

__all__ = [
    "generate",
    "list_generators",
    "get_spec",
    "resolve_params",
    "save",
    "load",
    "generate_to_dir",
    "get_or_generate",
    "VideoDataset",
    "PALETTE",
    "target_colors_from_log",
    "grid_label",
    "sample_frames_train",
    "sample_frames_eval",
]


def __getattr__(name: str):
    # VideoDataset needs torch; importing it lazily keeps `slotssm data ...` and the generators torch-free.
    if name == "VideoDataset":
        from slotssm.data.dataset import VideoDataset

        return VideoDataset
    raise AttributeError(f"module 'slotssm.data' has no attribute {name!r}")
