"""CATER-like snitch localisation with containment and occlusion (SlotSSM paper §7.4), seen from above.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here n is the number of videos, K = Kmax object slots, H = W the image
side in pixels.

Object 0 is the golden snitch (a small disc), objects 1..c are cones (triangles, large enough to hide the snitch),
the rest are spheres, cubes and cylinders (disc, square, hexagon). Time is cut into action slots of `slot_length`
frames; in each slot every free object slides to a random place with probability `move_prob`, and, while the
snitch is free, with probability `cover_prob` a cone slides onto it. From its arrival the cone contains the snitch:
the snitch is hidden and rides along whenever the cone slides (probability `carry_prob`; otherwise the cone is
lifted away and the snitch stays, visible again). Cones are drawn above everything, the snitch below everything.

Label: the snitch's final position on a 6x6 grid, class = 6 * floor(6 y / H) + floor(6 x / W).
Protocols of the paper: training reads one random frame from each of 50 segments (`sample_frames_train`),
evaluation every 6th frame (`sample_frames_eval`).

Keys: video (n, T, H, W, 3) uint8; label (n,) int64 in [0, 36); snitch_positions (n, T, 2) float64 (x, y) pixels;
snitch_visible (n, T) bool (some snitch pixel is drawn); snitch_contained (n, T) bool; positions (n, T, K, 2)
float64; object_type (n, K) int64 index into `OBJECT_TYPES` (-1 absent); num_objects (n,) int64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slotssm.data.physics import place_discs
from slotssm.data.registry import GeneratorSpec, register
from slotssm.data.render import SHAPES, ObjectLayer, visible_counts
from slotssm.data.shapes_video import COLORS, draw_scene

__all__ = ["SNITCH", "OBJECT_TYPES", "GRID", "grid_label", "sample_frames_train", "sample_frames_eval"]

OBJECT_TYPES = ("snitch", "cone", "sphere", "cube", "cylinder")
_TYPE_SHAPE = np.array([SHAPES.index(s) for s in ("disc", "triangle", "disc", "square", "hexagon")])
GOLD = np.array([212, 175, 55], dtype=np.float32)
BACKGROUND = np.array([190, 190, 190], dtype=np.float32)
GRID = 6

DEFAULTS: dict[str, Any] = {
    "num_frames": 300,
    "image_size": 64,
    "num_objects": (5, 10),  # (min, max) including the snitch and the cones; fewer distractors if they do not fit
    "num_cones": (2, 4),
    "slot_length": 30,
    "move_prob": 0.3,
    "cover_prob": 0.35,
    "carry_prob": 0.8,
    "snitch_size": 0.035,  # fractions of image_size (the unit shape's scale)
    "cone_size": 0.12,
    "object_sizes": (0.08, 0.095, 0.11),
}


def validate(p: dict[str, Any]) -> None:
    """Raise ValueError naming the first parameter out of range."""
    objs, cones = (tuple(p["num_objects"]) * 2)[-2:], (tuple(p["num_cones"]) * 2)[-2:]
    if len(p["num_objects"]) > 2 or not 2 <= objs[0] <= objs[1] <= 254:
        raise ValueError(f"num_objects: expected n or (min, max) with 2 <= min <= max, got {p['num_objects']}")
    if len(p["num_cones"]) > 2 or not 1 <= cones[0] <= cones[1] or cones[1] >= objs[0]:
        raise ValueError(f"num_cones: expected (min, max) with 1 <= min <= max < min objects, got {p['num_cones']}")
    if p["slot_length"] < 2 or p["num_frames"] < 1:
        raise ValueError(f"slot_length, num_frames: expected >= 2 and >= 1, got {p['slot_length']}, {p['num_frames']}")
    for key in ("move_prob", "cover_prob", "carry_prob"):
        if not 0 <= p[key] <= 1:
            raise ValueError(f"{key}: expected a probability in [0, 1], got {p[key]}")
    # A centred cone must hide the snitch: cone inradius (0.5) > snitch radius (0.9) + half a pixel of ramp.
    if 0.5 * p["cone_size"] * p["image_size"] <= 0.9 * p["snitch_size"] * p["image_size"] + 0.6:
        raise ValueError(f"cone_size: too small to hide a snitch of size {p['snitch_size']}, got {p['cone_size']}")


def grid_label(xy: np.ndarray, image_size: int) -> np.ndarray:
    """(..., 2) positions (x, y) in pixels -> (...) int64 class 6 * row + col on the 6x6 grid."""
    cell = np.clip(np.floor(GRID * np.asarray(xy) / image_size), 0, GRID - 1).astype(np.int64)
    return GRID * cell[..., 1] + cell[..., 0]


def sample_frames_train(num_frames: int, rng: np.random.Generator, segments: int = 50) -> np.ndarray:
    """One random frame from each of `segments` equal segments (paper: 50 segments of 6 frames). -> (segments,).

    For datasets read item by item (`VideoDataset(frame_indices=...)`, the readers), drawing from `rng`. The snitch
    task samples the same protocol itself, on whole batches and from torch's global RNG
    (`SnitchLocalization.sample_frames`), so that a resumed run, which restores torch's RNG state, draws the same
    frames; the two are kept apart on purpose. Its segment edges come from a float32 linspace, which for some
    (num_frames, segments) (e.g. 16, 14; none of the task's presets) puts an edge one frame lower than these float64
    ones.
    """
    if segments < 1 or num_frames < segments:
        raise ValueError(f"segments: expected 1 <= segments <= num_frames={num_frames}, got {segments}")
    edges = np.linspace(0, num_frames, segments + 1).astype(np.int64)
    return edges[:-1] + (rng.random(segments) * (edges[1:] - edges[:-1])).astype(np.int64)


def sample_frames_eval(num_frames: int, stride: int = 6) -> np.ndarray:
    """Every `stride`-th frame, starting at 0 (paper: every 6th of 300 -> 50 frames). -> (ceil(T / stride),)."""
    if stride < 1:
        raise ValueError(f"stride: expected >= 1, got {stride}")
    return np.arange(0, num_frames, stride)


def _slide(out: np.ndarray, a: np.ndarray, b: np.ndarray, s0: int, t0: int, t1: int, s1: int) -> None:
    """Fill out[s0:s1] (.., 2): rest at a until t0, slide smoothly to b by t1, rest at b until s1."""
    s = np.clip((np.arange(s0, s1) - t0) / max(t1 - t0, 1), 0, 1)
    s = s * s * (3 - 2 * s)  # smoothstep: start and stop at rest
    out[s0:s1] = a + (b - a) * s[:, None]


def _schedule(rng: np.random.Generator, p: dict[str, Any], k: int, c: int, sizes: np.ndarray):
    """Trajectories of one video: positions (T, k, 2), snitch contained (T,) bool."""
    t, size, slot = p["num_frames"], float(p["image_size"]), p["slot_length"]
    pos = np.zeros((t, k, 2))
    contained = np.zeros(t, dtype=bool)
    cur = place_discs(rng, sizes, size, size)  # (k, 2) apart at the start: the snitch is seen first
    holder = -1  # cone containing the snitch
    for s0 in range(0, t, slot):
        s1 = min(s0 + slot, t)
        target, start, stop = cur.copy(), np.full(k, s0), np.full(k, s0)
        moving = rng.random(k) < p["move_prob"]
        moving[0] &= holder < 0  # a contained snitch only moves with its cone
        coverer = -1
        if holder < 0 and rng.random() < p["cover_prob"]:
            coverer = 1 + int(rng.integers(c))
            moving[coverer], moving[0] = True, False  # the snitch waits for the cone
        for i in np.flatnonzero(moving):
            target[i] = cur[0] if i == coverer else rng.uniform(sizes[i], size - sizes[i], size=2)
            length = int(rng.integers(max((s1 - s0) // 2, 1), s1 - s0 + 1))
            start[i] = s0 + int(rng.integers(0, s1 - s0 - length + 1))
            stop[i] = start[i] + length - 1
        carry = holder > 0 and moving[holder] and rng.random() < p["carry_prob"]
        for i in range(k):
            _slide(pos[:, i], cur[i], target[i], s0, start[i], stop[i], s1)
        if holder > 0:
            if moving[holder] and not carry:  # lifted away: the snitch stays where it was, visible again
                contained[s0 : start[holder]] = True
                holder = -1
            else:
                pos[s0:s1, 0] = pos[s0:s1, holder]
                contained[s0:s1] = True
        if coverer > 0:
            contained[stop[coverer] : s1] = True
            pos[stop[coverer] : s1, 0] = pos[stop[coverer] : s1, coverer]
            holder = coverer
        cur = pos[s1 - 1].copy()
    return pos, contained


def generate_snitch(rngs: list[np.random.Generator], p: dict[str, Any]) -> dict[str, np.ndarray]:
    """Generator function of the registry (see the module docstring for keys and shapes)."""
    t, size = p["num_frames"], p["image_size"]
    lo_k, hi_k = (tuple(p["num_objects"]) * 2)[-2:]
    lo_c, hi_c = (tuple(p["num_cones"]) * 2)[-2:]
    n, kmax = len(rngs), hi_k
    otype = np.full((n, kmax), -1, dtype=np.int64)
    sizes, color = np.zeros((n, kmax)), np.zeros((n, kmax, 3), np.float32)
    pos, contained = np.zeros((n, t, kmax, 2)), np.zeros((n, t), dtype=bool)
    for v, rng in enumerate(rngs):
        k = int(rng.integers(lo_k, hi_k + 1))
        c = int(rng.integers(lo_c, min(hi_c, k - 1) + 1))
        otype[v, :k] = [0] + [1] * c + list(rng.integers(2, len(OBJECT_TYPES), size=k - 1 - c))
        sizes[v, 0], sizes[v, 1 : 1 + c] = p["snitch_size"] * size, p["cone_size"] * size
        sizes[v, 1 + c : k] = rng.choice(np.asarray(p["object_sizes"]), size=k - 1 - c) * size
        color[v, 0] = GOLD
        color[v, 1:k] = COLORS[rng.integers(len(COLORS) - 1, size=k - 1)]  # no yellow: it would pass for gold
        while True:
            try:
                pos[v, :, :k], contained[v] = _schedule(rng, p, k, c, sizes[v, :k])
                break
            except ValueError:
                # The drawn objects do not fit apart in the first frame (at 32x32, about one video in 3000 of
                # the largest draws): drop the last distractor and place again from the same stream. Videos that
                # fit are unchanged. Without distractors left, the sizes themselves are the error.
                if k - 1 - c <= 0:
                    raise
                k -= 1
                otype[v, k], sizes[v, k] = -1, 0.0
    present = otype >= 0
    # Draw order: snitch, then other objects, then cones on top.
    rank = np.where(otype == 0, 0, np.where(otype == 1, 2, 1)) + 3 * ~present
    order = np.argsort(rank * kmax + np.arange(kmax), axis=1)  # (n, K)
    pad = int(np.ceil(max(p["cone_size"], *p["object_sizes"]) * size * 1.25)) + 2
    video = np.empty((n, t, size, size, 3), np.uint8)
    visible = np.empty((n, t), dtype=bool)
    for s in range(0, n, 2):  # a 300-frame float canvas is large: two videos at a time
        sl, rows = slice(s, s + 2), np.arange(min(2, n - s))
        layers = []
        for r in range(kmax):
            obj = order[sl, r]
            layers.append(ObjectLayer(
                centres=pos[sl][rows, :, obj], size=sizes[sl][rows, obj], angle=np.zeros((len(rows), t)),
                shape=_TYPE_SHAPE[otype[sl][rows, obj].clip(0)], color=color[sl][rows, obj],
                label=(obj + 1).astype(np.uint8), present=present[sl][rows, obj],
            ))
        bg = np.broadcast_to(BACKGROUND, (len(rows), size, size, 3))
        video[sl], seg = draw_scene(bg, layers, size, pad)
        visible[sl] = visible_counts(seg, kmax + 1)[..., 1] > 0
    snitch = pos[:, :, 0]  # (n, T, 2)
    return {
        "video": video, "label": grid_label(snitch[:, -1], size), "snitch_positions": snitch,
        "snitch_visible": visible, "snitch_contained": contained, "positions": pos, "object_type": otype,
        "num_objects": present.sum(1).astype(np.int64),
    }


SNITCH = register(
    GeneratorSpec(
        name="snitch",
        version=1,
        fn=generate_snitch,
        defaults=DEFAULTS,
        dims={
            "video": ("video", "time", "height", "width", "rgb"),
            "label": ("video",),
            "snitch_positions": ("video", "time", "xy"),
            "snitch_visible": ("video", "time"),
            "snitch_contained": ("video", "time"),
            "positions": ("video", "time", "object", "xy"),
            "object_type": ("video", "object"),
            "num_objects": ("video",),
        },
        images=("video",),
        validate=validate,
        doc="CATER-like snitch localisation on a 6x6 grid with containment (3D reasoning, paper §7.4)",
    )
)
