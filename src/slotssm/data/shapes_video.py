"""MOVi-A/B-like multi-object videos with masks and attributes (SlotSSM paper §7.3, object-centric learning).

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here n is the number of videos, K = Kmax the number of object slots
(videos with fewer objects leave the last slots absent), H = W the image side in pixels.

Each video has between num_objects[0] and num_objects[1] objects: a shape, a colour from the eight CLEVR colours,
a size from `sizes`, a depth rank, a straight motion that bounces off the image border, and a spin. Objects are
drawn back to front (they pass over each other and occlude), anti-aliased; a pixel's segmentation label is the
front-most object covering at least half of it, so masks agree with the rendered pixels.
  - variant "a": the five shapes disc, square, triangle, diamond, star on a plain grey background;
  - variant "b": nine shapes (adds cross, hexagon, pentagon, ring) on a random background per video: a plain
    colour, a gradient, a checkerboard or stripes.

Keys: video (n, T, H, W, 3) uint8; segmentations (n, T, H, W) uint8 (0 background, i + 1 object i); shape (n, K)
int64 index into `SHAPES` (-1 absent); color (n, K, 3) uint8 (0 absent); color_id (n, K) int64 index into
`COLORS` (-1 absent); size (n, K) float64 pixels (0 absent); depth (n, K) int64 draw rank, 0 = back (-1 absent);
positions (n, T, K, 2) float64 (x, y) pixels (0 absent); visibility (n, T, K) bool (some pixel labelled);
num_objects (n,) int64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slotssm.data.registry import GeneratorSpec, register
from slotssm.data.render import SHAPES, ObjectLayer, composite, visible_counts

__all__ = ["SHAPES_VIDEO", "COLORS", "COLOR_NAMES", "SHAPES", "bounce", "draw_scene"]

COLOR_NAMES = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")  # the CLEVR colours
COLORS = np.array(
    [[87, 87, 87], [173, 35, 35], [42, 75, 215], [29, 105, 20], [129, 74, 25], [129, 38, 192], [41, 208, 208],
     [255, 238, 51]],
    dtype=np.uint8,
)  # (8, 3)
SHAPES_A = 5  # variant "a" uses SHAPES[:5]
BACKGROUND_A = np.array([180, 180, 180], dtype=np.float32)

DEFAULTS: dict[str, Any] = {
    "num_frames": 24,
    "image_size": 64,
    "num_objects": (3, 10),  # (min, max) per video; Kmax = max
    "variant": "a",
    "sizes": (0.07, 0.10, 0.13),  # fractions of image_size; each object draws one
    "speed_range": (0.0, 0.04),  # fraction of image_size per frame
    "max_spin": 0.06,  # radians per frame
    "antialias": True,  # False: hard edges, every labelled pixel has exactly its object's colour
}


def validate(p: dict[str, Any]) -> None:
    """Raise ValueError naming the first parameter out of range."""
    lo, hi = (tuple(p["num_objects"]) * 2)[-2:]
    if len(p["num_objects"]) > 2 or not 1 <= lo <= hi <= 254:
        raise ValueError(f"num_objects: expected n or (min, max) with 1 <= min <= max <= 254, got {p['num_objects']}")
    if p["variant"] not in ("a", "b"):
        raise ValueError(f"variant: expected 'a' or 'b', got {p['variant']!r}")
    if p["num_frames"] < 1 or p["image_size"] < 16:
        raise ValueError(f"num_frames, image_size: expected >= 1 and >= 16, got {p['num_frames']}, {p['image_size']}")
    if not all(0 < s < 0.4 for s in p["sizes"]):
        raise ValueError(f"sizes: expected fractions in (0, 0.4) of image_size, got {p['sizes']}")
    if len(p["speed_range"]) != 2 or not 0 <= p["speed_range"][0] <= p["speed_range"][1]:
        raise ValueError(f"speed_range: expected (low, high) with 0 <= low <= high, got {p['speed_range']}")


def bounce(start: np.ndarray, velocity: np.ndarray, low: np.ndarray, high: np.ndarray, num_frames: int) -> np.ndarray:
    """Closed-form straight motion reflected between low and high: start, velocity, low, high (...) -> (..., T)."""
    span = np.maximum(high - low, 1e-9)[..., None]
    u = np.mod(start[..., None] - low[..., None] + velocity[..., None] * np.arange(num_frames), 2 * span)
    return low[..., None] + span - np.abs(u - span)


def _background(rng: np.random.Generator, variant: str, size: int) -> np.ndarray:
    """One video's background (H, W, 3) float32."""
    if variant == "a":
        return np.broadcast_to(BACKGROUND_A, (size, size, 3)).copy()
    kind = rng.integers(4)
    c1, c2 = rng.uniform(40, 215, size=(2, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if kind == 0:  # plain colour
        mix = np.zeros((size, size), np.float32)
    elif kind == 1:  # linear gradient in a random direction
        a = rng.uniform(0, 2 * np.pi)
        proj = (xx - size / 2) * np.cos(a) + (yy - size / 2) * np.sin(a)
        mix = (proj / size + 0.5).clip(0, 1)
    elif kind == 2:  # checkerboard
        cell = rng.integers(4, 12)
        mix = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:  # stripes in a random direction
        a, width = rng.uniform(0, np.pi), rng.uniform(3, 8)
        mix = (((xx * np.cos(a) + yy * np.sin(a)) // width) % 2).astype(np.float32)
    return c1 * (1 - mix[..., None]) + c2 * mix[..., None]


def draw_scene(
    background: np.ndarray, layers: list[ObjectLayer], size: int, pad: int, hard: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Composite layers (back to front) over backgrounds (n, H, W, 3) float32 for T frames (hard: no anti-aliasing).

    Returns video (n, T, H, W, 3) uint8 and labels (n, T, H, W) uint8.
    """
    n, t = layers[0].centres.shape[:2]
    canvas = np.zeros((n, t, size + 2 * pad, size + 2 * pad, 3), np.float32)
    canvas[:, :, pad:-pad, pad:-pad] = background[:, None]
    seg = np.zeros(canvas.shape[:-1], np.uint8)
    for layer in layers:
        composite(canvas, seg, layer, pad, hard)
    video = np.rint(canvas[:, :, pad:-pad, pad:-pad]).clip(0, 255).astype(np.uint8)
    return video, seg[:, :, pad:-pad, pad:-pad].copy()


def _sample_video(rng: np.random.Generator, p: dict[str, Any], kmax: int) -> dict[str, np.ndarray]:
    """Attributes and trajectories of one video, padded to kmax slots."""
    size, t = float(p["image_size"]), p["num_frames"]
    lo, hi = (tuple(p["num_objects"]) * 2)[-2:]
    k = int(rng.integers(lo, hi + 1))
    num_shapes = SHAPES_A if p["variant"] == "a" else len(SHAPES)
    shape = np.full(kmax, -1)
    shape[:k] = rng.integers(num_shapes, size=k)
    color_id = np.full(kmax, -1)
    color_id[:k] = rng.integers(len(COLORS), size=k)
    obj_size = np.zeros(kmax)
    obj_size[:k] = rng.choice(np.asarray(p["sizes"]), size=k) * size
    depth = np.full(kmax, -1)
    depth[:k] = rng.permutation(k)
    start = rng.uniform(obj_size[:k, None], size - obj_size[:k, None], size=(k, 2))  # (k, 2)
    speed = rng.uniform(*p["speed_range"], size=k) * size
    heading = rng.uniform(0, 2 * np.pi, size=k)
    vel = speed[:, None] * np.stack([np.cos(heading), np.sin(heading)], -1)  # (k, 2)
    edge = np.broadcast_to(obj_size[:k, None], (k, 2))
    pos = np.zeros((t, kmax, 2))
    pos[:, :k] = bounce(start, vel, edge, size - edge, t).transpose(2, 0, 1)  # (T, k, 2)
    angle = np.zeros((t, kmax))
    angle[:, :k] = rng.uniform(0, 2 * np.pi, size=k) + np.arange(t)[:, None] * rng.uniform(
        -p["max_spin"], p["max_spin"], size=k
    )
    return {"shape": shape, "color_id": color_id, "size": obj_size, "depth": depth, "positions": pos, "angle": angle,
            "num_objects": np.int64(k), "background": _background(rng, p["variant"], int(size))}


def generate_shapes_video(rngs: list[np.random.Generator], p: dict[str, Any]) -> dict[str, np.ndarray]:
    """Generator function of the registry (see the module docstring for keys and shapes)."""
    kmax = p["num_objects"][-1]
    per = [_sample_video(rng, p, kmax) for rng in rngs]
    a = {key: np.stack([v[key] for v in per]) for key in per[0]}
    n, size = len(rngs), p["image_size"]
    present = a["shape"] >= 0  # (n, K)
    color = np.where(present[..., None], COLORS[a["color_id"].clip(0)], 0).astype(np.uint8)  # (n, K, 3)
    pad = int(np.ceil(max(p["sizes"]) * size * 1.25)) + 2
    rows = np.arange(n)
    order = np.argsort(np.where(present, a["depth"], kmax), axis=1, kind="stable")  # (n, K) back to front
    layers = []
    for rank in range(kmax):
        obj = order[:, rank]  # (n,)
        layers.append(ObjectLayer(
            centres=a["positions"][rows, :, obj], size=a["size"][rows, obj], angle=a["angle"][rows, :, obj],
            shape=a["shape"][rows, obj].clip(0), color=color[rows, obj].astype(np.float32),
            label=(obj + 1).astype(np.uint8), present=present[rows, obj],
        ))
    video, seg = draw_scene(a["background"], layers, size, pad, hard=not p["antialias"])
    visibility = visible_counts(seg, kmax + 1)[..., 1:] > 0  # (n, T, K)
    return {
        "video": video, "segmentations": seg, "shape": a["shape"].astype(np.int64), "color": color,
        "color_id": a["color_id"].astype(np.int64), "size": a["size"], "depth": a["depth"].astype(np.int64),
        "positions": a["positions"], "visibility": visibility, "num_objects": a["num_objects"].astype(np.int64),
    }


SHAPES_VIDEO = register(
    GeneratorSpec(
        name="shapes_video",
        version=1,
        fn=generate_shapes_video,
        defaults=DEFAULTS,
        dims={
            "video": ("video", "time", "height", "width", "rgb"),
            "segmentations": ("video", "time", "height", "width"),
            "shape": ("video", "object"),
            "color": ("video", "object", "rgb"),
            "color_id": ("video", "object"),
            "size": ("video", "object"),
            "depth": ("video", "object"),
            "positions": ("video", "time", "object", "xy"),
            "visibility": ("video", "time", "object"),
            "num_objects": ("video",),
        },
        images=("video", "segmentations"),
        validate=validate,
        doc="MOVi-A/B-like shapes with occlusion, masks and attributes (object-centric learning, paper §7.3)",
    )
)
