"""Blinking Color Balls (SlotSSM paper §7.2 and App. B): long-context reasoning over a patch sequence.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here n is the number of videos, T the number of context frames, K the
number of balls, H = W the image side in pixels.

Balls bounce as in `bouncing_balls`. In each context frame one ball (uniform) is painted with one of five colours
(uniform) and the others are white. The target is the frame after the context with every ball painted by the rule:
  - "earliest": the first colour the ball ever received; white if it never received one;
  - "most_frequent": the colour it received most often, a tie going to the tied colour it received first;
    white if it never received one.
Rendering is hard-edged so pixel classes are lossless: 0 background (black), 1 white, 2..6 the colours of `PALETTE`.
Models read the frames as `slotssm.patches.patchify(frames, patch, channels_last=True)` with the frame and patch
axes merged: T * (H / p) * (W / p) steps, e.g. 40 frames of 64 patches (8x8 on 64x64) is 2560 steps.

Keys: frames (n, T, H, W, 3) uint8; target (n, H, W, 3) uint8; target_classes (n, H, W) uint8; picked_ball (n, T);
picked_color (n, T) in 2..6; target_colors (n, K) in 1..6; positions (n, T + 1, K, 2) float64; radii (n, K);
palette (7, 3) uint8 (the same for every video).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slotssm.data import bouncing_balls
from slotssm.data.registry import GeneratorSpec, register
from slotssm.data.render import disc_distance

__all__ = ["BLINKING_BALLS", "PALETTE", "RULES", "target_colors_from_log", "classes_to_rgb", "rgb_to_classes"]

PALETTE = np.array(
    [[0, 0, 0], [255, 255, 255], [255, 40, 40], [40, 220, 40], [50, 90, 255], [255, 220, 0], [230, 40, 230]],
    dtype=np.uint8,
)  # (7, 3): background, white, red, green, blue, yellow, magenta
NUM_COLORS = 5
RULES = ("earliest", "most_frequent")

DEFAULTS: dict[str, Any] = {
    "num_frames": 20,  # context frames T; the target is frame T
    "image_size": 64,
    "num_objects": 4,
    "patch": 8,  # patch side for the sequence view; recorded so a task can check it, frames are stored whole
    "rule": "earliest",
    "radius_range": (0.08, 0.11),
    "mass_range": (1.0, 5.0),
    "mass_values": (),
    "speed_range": (0.02, 0.05),
    "substeps": 8,
}


def validate(p: dict[str, Any]) -> None:
    """Raise ValueError naming the first parameter out of range."""
    bouncing_balls.validate(p)
    if p["rule"] not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {p['rule']!r}")
    if p["patch"] < 1 or p["image_size"] % p["patch"]:
        raise ValueError(f"patch: expected a divisor of image_size={p['image_size']}, got {p['patch']}")
    if p["num_objects"] > 254:
        raise ValueError(f"num_objects: expected <= 254, got {p['num_objects']}")


def target_colors_from_log(picked_ball: np.ndarray, picked_color: np.ndarray, num_balls: int, rule: str) -> np.ndarray:
    """Target colour class of every ball from the blink log.

    picked_ball (n, T) in [0, K); picked_color (n, T) in 2..6 -> (n, K) int64 in 1..6 (1 = white: never picked).
    """
    if picked_ball.shape != picked_color.shape or picked_ball.ndim != 2:
        raise ValueError(
            f"picked_ball, picked_color: expected (n, T) each, got {picked_ball.shape}, {picked_color.shape}"
        )
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    n, t = picked_ball.shape
    rows = np.arange(n)
    first = np.full((n, num_balls, 7), t, dtype=np.int64)  # (n, K, 7) first frame each colour was given; t = never
    for step in range(t - 1, -1, -1):
        first[rows, picked_ball[:, step], picked_color[:, step]] = step
    if rule == "earliest":
        best = first[..., 2:].argmin(-1) + 2  # (n, K)
        never = first[..., 2:].min(-1) == t
    else:
        counts = np.zeros((n, num_balls, 7), dtype=np.int64)
        np.add.at(counts, (rows[:, None], picked_ball, picked_color), 1)
        # Lexicographic: most picks, then the earliest first pick (t - first is in [1, t] when counts > 0).
        key = counts[..., 2:] * (t + 1) + (t - first[..., 2:])
        best = key.argmax(-1) + 2
        never = counts[..., 2:].max(-1) == 0
    return np.where(never, 1, best).astype(np.int64)


def classes_to_rgb(classes: np.ndarray) -> np.ndarray:
    """Pixel classes (...) uint8 in 0..6 -> RGB (..., 3) uint8 through `PALETTE`."""
    return PALETTE[classes]


def rgb_to_classes(rgb: np.ndarray) -> np.ndarray:
    """RGB (..., 3) uint8 drawn from `PALETTE` -> classes (...) uint8; a colour outside the palette is an error."""
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb: expected (..., 3), got {rgb.shape}")
    code = rgb.astype(np.int64) @ np.array([65536, 256, 1])  # (...)
    keys = PALETTE.astype(np.int64) @ np.array([65536, 256, 1])  # (7,)
    match = code[..., None] == keys  # (..., 7)
    if not match.any(-1).all():
        raise ValueError("rgb: found a colour that is not in PALETTE")
    return match.argmax(-1).astype(np.uint8)


def _render_classes(positions: np.ndarray, radii: np.ndarray, ball_class: np.ndarray, size: int) -> np.ndarray:
    """Hard-edged class maps. positions (n, F, K, 2), radii (n, K), ball_class (n, F, K) -> (n, F, H, W) uint8."""
    n, f, k, _ = positions.shape
    dist, index = disc_distance(positions.reshape(n * f, k, 2), np.repeat(radii, f, axis=0), size, size)
    cls = np.take_along_axis(ball_class.reshape(n * f, k), index.reshape(n * f, -1).astype(np.int64), axis=1)
    cls = np.where(dist.reshape(n * f, -1) <= 0, cls, 0).astype(np.uint8)  # (n*F, H*W)
    return cls.reshape(n, f, size, size)


def generate_blinking_balls(rngs: list[np.random.Generator], p: dict[str, Any]) -> dict[str, np.ndarray]:
    """Generator function of the registry (see the module docstring for keys and shapes)."""
    t, k, size = p["num_frames"], p["num_objects"], p["image_size"]
    balls = bouncing_balls.sample_balls(rngs, {**p, "num_frames": t + 1})  # context frames + the target frame
    picked_ball = np.stack([rng.integers(0, k, size=t) for rng in rngs])  # (n, T)
    picked_color = np.stack([rng.integers(2, 2 + NUM_COLORS, size=t) for rng in rngs])  # (n, T)
    target_colors = target_colors_from_log(picked_ball, picked_color, k, p["rule"])  # (n, K)

    n = len(rngs)
    ball_class = np.ones((n, t + 1, k), dtype=np.uint8)  # (n, T+1, K): white unless picked
    ball_class[np.arange(n)[:, None], np.arange(t)[None], picked_ball] = picked_color
    ball_class[:, t] = target_colors
    classes = np.empty((n, t + 1, size, size), np.uint8)
    for s in range(0, n, 16):  # bounded memory for long contexts
        classes[s : s + 16] = _render_classes(
            balls["positions"][s : s + 16], balls["radii"][s : s + 16], ball_class[s : s + 16], size
        )
    return {
        "frames": classes_to_rgb(classes[:, :t]),
        "target": classes_to_rgb(classes[:, t]),
        "target_classes": classes[:, t],
        "picked_ball": picked_ball.astype(np.int64),
        "picked_color": picked_color.astype(np.int64),
        "target_colors": target_colors,
        "positions": balls["positions"],
        "radii": balls["radii"],
        "palette": PALETTE.copy(),
    }


BLINKING_BALLS = register(
    GeneratorSpec(
        name="blinking_balls",
        version=1,
        fn=generate_blinking_balls,
        defaults=DEFAULTS,
        dims={
            "frames": ("video", "time", "height", "width", "rgb"),
            "target": ("video", "height", "width", "rgb"),
            "target_classes": ("video", "height", "width"),
            "picked_ball": ("video", "time"),
            "picked_color": ("video", "time"),
            "target_colors": ("video", "object"),
            "positions": ("video", "step", "object", "xy"),
            "radii": ("video", "object"),
            "palette": ("class", "rgb"),
        },
        static=frozenset({"palette"}),
        images=("frames", "target"),
        validate=validate,
        doc="Blinking Color Balls, rules 'earliest' / 'most_frequent' (long-context reasoning, paper §7.2)",
    )
)
