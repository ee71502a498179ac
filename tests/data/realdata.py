"""Fixtures in the formats real datasets ship in, written by code: MOVi TFDS shards, CATER, CLEVRER, R-NEM HDF5.

Content comes from slotssm's own generators (so masks, labels and positions are consistent), stored the way the
published datasets store it.
"""

from __future__ import annotations

import io
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from slotssm.data import generate
from slotssm.data.readers.tfrecord import make_example, write_records


def png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    iio.imwrite(buf, frame, extension=".png")
    return buf.getvalue()


def movi_arrays(n: int, t: int = 4, size: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """MOVi-like videos (n, T, size, size, 3) with masks and labels from the shapes_video generator."""
    return generate("shapes_video", n, seed, num_frames=t, image_size=size, num_objects=(1, 2))


def movi_example(a: dict[str, np.ndarray], i: int, name: str) -> bytes:
    """Video i of `a` as a tf.train.Example in Kubric's MOVi feature schema (challenges/movi/movi_a.py `_info`)."""
    t, h, w = a["segmentations"].shape[1:]
    k = int(a["num_objects"][i])
    return make_example({
        "video": [png(f) for f in a["video"][i]],
        "segmentations": [png(s) for s in a["segmentations"][i]],  # single-channel PNGs
        "metadata/video_name": [name.encode()],
        "metadata/num_frames": np.array([t]), "metadata/height": np.array([h]), "metadata/width": np.array([w]),
        "metadata/num_instances": np.array([k]),
        "metadata/depth_range": np.array([0.0, 1.0], np.float32),
        "instances/shape_label": a["shape"][i, :k], "instances/color_label": a["color_id"][i, :k],
        "instances/size_label": np.zeros(k, np.int64),
        "instances/color": (a["color"][i, :k] / 255.0).astype(np.float32),
        "instances/image_positions": (a["positions"][i, :, :k].transpose(1, 0, 2) / (w, h)).astype(np.float32),
        "instances/visibility": a["visibility"][i].T[:k].astype(np.int64) * 10,
        "instances/mass": np.ones(k, np.float32),
        "camera/focal_length": np.array([35.0], np.float32),
    })


def write_movi_shards(root: Path, split: str, a: dict[str, np.ndarray], shards: int = 2) -> list[Path]:
    """Videos of `a` as TFDS shards ``movi_a-<split>.tfrecord-0000i-of-0000n`` in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    n = len(a["video"])
    paths = []
    for s in range(shards):
        path = root / f"movi_a-{split}.tfrecord-{s:05d}-of-{shards:05d}"
        write_records(path, [movi_example(a, i, f"{split}_{i}") for i in range(s, n, shards)])
        paths.append(path)
    return paths


def write_video(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """Encode (T, H, W, 3) uint8 frames with PyAV's own encoder (MPEG-4 Part 2, in .avi or .mp4)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def smooth_video(t: int, h: int, w: int, seed: int) -> np.ndarray:
    """A moving bright square on a gradient: content a lossy codec keeps close to the original."""
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.stack([xs * 255 // max(w - 1, 1), ys * 255 // max(h - 1, 1), np.full_like(xs, 80)], -1)
    frames = np.repeat(base[None], t, 0).astype(np.uint8)
    rng = np.random.default_rng(seed)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    for i in range(t):
        frames[i, y0 : y0 + h // 3, (x0 + i) % (w // 2) : (x0 + i) % (w // 2) + w // 3] = 255
    return frames


def write_cater(root: Path, counts: dict[str, int], t: int = 13, h: int = 32, w: int = 40) -> dict[str, list]:
    """``videos/CATER_new_00000i.avi`` and ``lists/localize/<split>.txt``; returns {split: [(name, label)]}."""
    lists = root / "lists" / "localize"
    lists.mkdir(parents=True, exist_ok=True)
    out, i = {}, 0
    for split, n in counts.items():
        rows = []
        for _ in range(n):
            name = f"CATER_new_{i:06d}.avi"
            write_video(root / "videos" / name, smooth_video(t, h, w, i))
            rows.append((name, (7 * i) % 36))
            i += 1
        (lists / f"{split}.txt").write_text("".join(f"{name} {label}\n" for name, label in rows))
        out[split] = rows
    return out


def write_clevrer(root: Path, counts: dict[str, int], t: int = 8, h: int = 24, w: int = 32) -> None:
    """``video_<split>/video_00000-01000/video_0000i.mp4`` (annotations are not needed for video prediction)."""
    i = 0
    for split, n in counts.items():
        for _ in range(n):
            write_video(root / f"video_{split}" / "video_00000-01000" / f"video_{i:05d}.mp4", smooth_video(t, h, w, i))
            i += 1


def write_bouncing_balls_h5(path: Path, counts: dict[str, int], t: int = 8, size: int = 24) -> dict[str, np.ndarray]:
    """An HDF5 file in the Relational-NEM layout: <split>/features and groups (T, N, H, W, 1) float32."""
    import h5py

    out = {}
    with h5py.File(path, "w") as f:
        for seed, (split, n) in enumerate(counts.items()):
            a = generate("bouncing_balls", n, seed, num_frames=t, image_size=size, num_objects=2)
            frames = (a["frames"] > 127).astype(np.float32)  # R-NEM's balls are binary images
            group = f.create_group(split)
            group["features"] = frames.transpose(1, 0, 2, 3)[..., None]  # (T, N, H, W, 1)
            group["groups"] = a["ids"].astype(np.float32).transpose(1, 0, 2, 3)[..., None]
            group["collisions"] = np.zeros((t, n, size, size, 1), np.float32)
            out[split] = frames
    return out
