"""Bouncing balls with random masses (SlotSSM paper §7.1, after van Steenkiste et al. 2018): video prediction.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here n is the number of videos, K the number of balls, H = W the image
side in pixels.

K balls with per-ball radius and mass, non-overlapping initial positions and random velocities, elastic ball-ball
collisions along the line of centres (with the masses) and elastic walls, several physics sub-steps per frame
(see `physics.py`). Frames are grayscale, white anti-aliased discs on black.

Keys: frames (n, T, H, W) uint8; ids (n, T, H, W) uint8 (0 background, i + 1 ball i); positions (n, T, K, 2)
float64 (x, y) pixels, origin top-left; velocities (n, T, K, 2) float64 pixels per frame; masses (n, K); radii (n, K).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slotssm.data.physics import place_discs, simulate_discs
from slotssm.data.registry import GeneratorSpec, register
from slotssm.data.render import coverage, disc_distance

__all__ = ["BOUNCING_BALLS", "sample_balls", "render_gray"]

DEFAULTS: dict[str, Any] = {
    "num_frames": 20,
    "image_size": 64,
    "num_objects": 4,
    "radius_range": (0.06, 0.10),  # fraction of image_size
    "mass_range": (1.0, 5.0),  # uniform, used when mass_values is empty
    "mass_values": (),  # a set of masses to draw from uniformly, e.g. (1, 2, 4)
    "speed_range": (0.02, 0.05),  # fraction of image_size per frame
    "substeps": 8,
}


def validate(p: dict[str, Any]) -> None:
    """Raise ValueError naming the first parameter out of range."""
    if p["num_frames"] < 1:
        raise ValueError(f"num_frames: expected >= 1, got {p['num_frames']}")
    if p["image_size"] < 8:
        raise ValueError(f"image_size: expected >= 8, got {p['image_size']}")
    if p["num_objects"] < 1:
        raise ValueError(f"num_objects: expected >= 1, got {p['num_objects']}")
    if p["substeps"] < 1:
        raise ValueError(f"substeps: expected >= 1, got {p['substeps']}")
    for key in ("radius_range", "mass_range", "speed_range"):
        lo_hi = p[key]
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1]:
            raise ValueError(f"{key}: expected (low, high) with 0 <= low <= high, got {lo_hi}")
    if p["radius_range"][0] <= 0 or p["radius_range"][1] >= 0.5:
        raise ValueError(f"radius_range: expected within (0, 0.5) of image_size, got {p['radius_range']}")
    if p["mass_range"][0] <= 0 or any(m <= 0 for m in p["mass_values"]):
        raise ValueError(f"mass_range, mass_values: masses must be positive, got {p['mass_range']}, {p['mass_values']}")


def sample_balls(rngs: list[np.random.Generator], p: dict[str, Any]) -> dict[str, np.ndarray]:
    """Draw radii, masses, initial positions and velocities per video, then simulate.

    Returns positions, velocities (n, T, K, 2) float64, radii, masses (n, K) float64.
    """
    size, k = float(p["image_size"]), p["num_objects"]
    n = len(rngs)
    radii, masses = np.empty((n, k)), np.empty((n, k))
    pos0, vel0 = np.empty((n, k, 2)), np.empty((n, k, 2))
    for i, rng in enumerate(rngs):  # per-video draws keep each video independent of the batch split
        radii[i] = rng.uniform(*p["radius_range"], size=k) * size
        if len(p["mass_values"]):
            masses[i] = rng.choice(np.asarray(p["mass_values"], dtype=np.float64), size=k)
        else:
            masses[i] = rng.uniform(*p["mass_range"], size=k)
        pos0[i] = place_discs(rng, radii[i], size, size)
        speed = rng.uniform(*p["speed_range"], size=k) * size
        angle = rng.uniform(0.0, 2 * np.pi, size=k)
        vel0[i] = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    positions, velocities = simulate_discs(
        pos0, vel0, radii, masses, width=size, height=size, num_frames=p["num_frames"], substeps=p["substeps"]
    )
    return {"positions": positions, "velocities": velocities, "radii": radii, "masses": masses}


def render_gray(positions: np.ndarray, radii: np.ndarray, image_size: int, chunk: int = 64):
    """White anti-aliased discs on black. positions (n, T, K, 2), radii (n, K) -> frames, ids (n, T, H, W) uint8."""
    n, t, k, _ = positions.shape
    cen = positions.reshape(n * t, k, 2)  # (n*T, K, 2)
    rad = np.repeat(radii, t, axis=0)  # (n*T, K)
    frames = np.empty((n * t, image_size, image_size), np.uint8)
    ids = np.empty((n * t, image_size, image_size), np.uint8)
    for s in range(0, n * t, chunk):  # chunks keep the (F, K, H, W) distance array in cache
        dist, index = disc_distance(cen[s : s + chunk], rad[s : s + chunk], image_size, image_size)
        frames[s : s + chunk] = np.rint(coverage(dist) * 255)
        ids[s : s + chunk] = np.where(dist <= 0, index + 1, 0)
    shape = (n, t, image_size, image_size)
    return frames.reshape(shape), ids.reshape(shape)


def generate_bouncing_balls(rngs: list[np.random.Generator], p: dict[str, Any]) -> dict[str, np.ndarray]:
    """Generator function of the registry (see the module docstring for keys and shapes)."""
    out = sample_balls(rngs, p)
    frames, ids = render_gray(out["positions"], out["radii"], p["image_size"])
    return {"frames": frames, "ids": ids, **out}


BOUNCING_BALLS = register(
    GeneratorSpec(
        name="bouncing_balls",
        version=1,
        fn=generate_bouncing_balls,
        defaults=DEFAULTS,
        dims={
            "frames": ("video", "time", "height", "width"),
            "ids": ("video", "time", "height", "width"),
            "positions": ("video", "time", "object", "xy"),
            "velocities": ("video", "time", "object", "xy"),
            "masses": ("video", "object"),
            "radii": ("video", "object"),
        },
        images=("frames", "ids"),
        validate=validate,
        doc="elastic balls with random masses and radii, grayscale (video prediction, paper §7.1)",
    )
)
