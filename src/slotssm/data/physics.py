"""Elastic discs in a box: initial placement and a sub-stepped simulation vectorised over videos.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here n is the number of videos, K the number of balls, and H, W the
box height and width in pixels. Coordinates are (x, y) in pixels, origin at the top-left corner, y down.

Collisions are resolved pair by pair (so each one conserves energy and momentum exactly in exact arithmetic):
an overlapping, approaching pair is rewound to its time of contact within the sub-step, exchanges momentum along
the line of centres with the masses,

    v_i' = v_i - 2 m_j / (m_i + m_j) <v_i - v_j, u> u,    v_j' = v_j + 2 m_i / (m_i + m_j) <v_i - v_j, u> u,

and moves on with its new velocities for the rest of the sub-step. Walls mirror position and velocity. A pair that
still overlaps while separating (squeezed by a wall or a third ball) is pushed apart without touching velocities.
"""

from __future__ import annotations

import numpy as np

__all__ = ["place_discs", "simulate_discs", "kinetic_energy"]


def place_discs(
    rng: np.random.Generator, radii: np.ndarray, width: float, height: float, *, margin: float = 0.5, tries: int = 200
) -> np.ndarray:
    """Non-overlapping centres for discs of the given radii (K,), inside a width x height box.

    Sequential rejection sampling with candidates drawn in blocks. Returns (K, 2) float64 (x, y).
    """
    k = len(radii)
    pos = np.zeros((k, 2))
    for i in range(k):
        r = radii[i]
        for _ in range(tries):
            cand = rng.uniform((r, r), (width - r, height - r), size=(32, 2))  # (32, 2)
            if i == 0:
                pos[0] = cand[0]
                break
            gap = np.linalg.norm(cand[:, None] - pos[None, :i], axis=-1) - (radii[:i] + r + margin)  # (32, i)
            ok = np.flatnonzero((gap > 0).all(axis=1))
            if len(ok):
                pos[i] = cand[ok[0]]
                break
        else:
            raise ValueError(
                f"num_objects: cannot place {k} non-overlapping balls of radii {np.round(radii, 2).tolist()} "
                f"in a {width}x{height} box; use fewer or smaller balls"
            )
    return pos


def _resolve_pairs(pos: np.ndarray, vel: np.ndarray, radii: np.ndarray, masses: np.ndarray, dt: float) -> bool:
    """One pass of pairwise collisions, in place. pos, vel (n, K, 2); radii, masses (n, K). True if any hit."""
    n, k, _ = pos.shape
    diff = pos[:, :, None] - pos[:, None]  # (n, K, K, 2)
    dist2 = (diff**2).sum(-1)  # (n, K, K)
    reach = radii[:, :, None] + radii[:, None]  # (n, K, K)
    hits = np.triu(dist2 < reach**2, 1)  # (n, K, K), overlapping pairs i < j
    if not hits.any():
        return False
    for i, j in zip(*np.nonzero(hits.any(axis=0))):
        rows = np.flatnonzero(hits[:, i, j])
        # Recheck on current state: an earlier pair in this pass may have changed these balls.
        d = pos[rows, i] - pos[rows, j]  # (r, 2)
        dv = vel[rows, i] - vel[rows, j]  # (r, 2)
        big_r = radii[rows, i] + radii[rows, j]  # (r,)
        b = (d * dv).sum(-1)
        c = (d * d).sum(-1) - big_r**2
        apart = (c < 0) & (b >= 0)
        if apart.any():
            # Overlapping but already separating (a ball pushed by a wall or a third ball): push the pair apart
            # along the line of centres, heavier ball moving less; velocities (and energy) are untouched.
            ra, da = rows[apart], d[apart]
            norm = np.linalg.norm(da, axis=-1, keepdims=True)
            push = (big_r[apart][:, None] - norm) * da / np.maximum(norm, 1e-12)  # (r, 2)
            wi = masses[ra, j][:, None] / (masses[ra, i] + masses[ra, j])[:, None]
            pos[ra, i] += push * wi
            pos[ra, j] -= push * (1 - wi)
        live = (c < 0) & (b < 0)
        if not live.any():
            continue
        rows, d, dv, b, c, big_r = rows[live], d[live], dv[live], b[live], c[live], big_r[live]
        a = (dv * dv).sum(-1)
        # Time since contact: |d - dv tau| = R  =>  a tau^2 - 2 b tau + c = 0, the positive root.
        tau = np.clip((b + np.sqrt(b * b - a * c)) / a, 0.0, dt)[:, None]  # (r, 1)
        pi = pos[rows, i] - vel[rows, i] * tau
        pj = pos[rows, j] - vel[rows, j] * tau
        u = pi - pj
        u /= np.linalg.norm(u, axis=-1, keepdims=True)  # (r, 2) unit line of centres
        mi, mj = masses[rows, i][:, None], masses[rows, j][:, None]
        proj = ((vel[rows, i] - vel[rows, j]) * u).sum(-1, keepdims=True)  # (r, 1)
        vi = vel[rows, i] - (2 * mj / (mi + mj)) * proj * u
        vj = vel[rows, j] + (2 * mi / (mi + mj)) * proj * u
        vel[rows, i], vel[rows, j] = vi, vj
        pos[rows, i], pos[rows, j] = pi + vi * tau, pj + vj * tau
    return True


def _resolve_walls(pos: np.ndarray, vel: np.ndarray, radii: np.ndarray, width: float, height: float) -> None:
    """Mirror discs that crossed a wall back inside, in place. pos, vel (n, K, 2); radii (n, K)."""
    for axis, size in ((0, width), (1, height)):
        x, v, r = pos[..., axis], vel[..., axis], radii
        low = x < r
        x[low] = 2 * r[low] - x[low]
        v[low] = np.abs(v[low])
        high = x > size - r
        x[high] = 2 * (size - r[high]) - x[high]
        v[high] = -np.abs(v[high])


def simulate_discs(
    pos0: np.ndarray,
    vel0: np.ndarray,
    radii: np.ndarray,
    masses: np.ndarray,
    *,
    width: float,
    height: float,
    num_frames: int,
    substeps: int,
    max_passes: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate elastic discs; frame 0 is the initial state, velocities in pixels per frame.

    pos0, vel0: (n, K, 2) float64; radii, masses: (n, K). Returns positions, velocities (n, T, K, 2) float64.
    Each frame is `substeps` equal sub-steps; each sub-step moves, then resolves walls and pairs, repeated (up to
    `max_passes` rounds) until a pair pass finds nothing to do, for balls squeezed against a wall.
    """
    if pos0.ndim != 3 or pos0.shape[-1] != 2 or vel0.shape != pos0.shape:
        raise ValueError(f"pos0, vel0: expected (n, K, 2) each, got {pos0.shape} and {vel0.shape}")
    if radii.shape != pos0.shape[:2] or masses.shape != pos0.shape[:2]:
        raise ValueError(f"radii, masses: expected {pos0.shape[:2]}, got {radii.shape} and {masses.shape}")
    n, k, _ = pos0.shape
    pos, vel = pos0.astype(np.float64).copy(), vel0.astype(np.float64).copy()
    out_pos = np.empty((n, num_frames, k, 2))  # (n, T, K, 2)
    out_vel = np.empty((n, num_frames, k, 2))
    out_pos[:, 0], out_vel[:, 0] = pos, vel
    dt = 1.0 / substeps
    for t in range(1, num_frames):
        for _ in range(substeps):
            pos += vel * dt
            for _ in range(max_passes):  # walls, then pairs, until a pair pass changes nothing
                _resolve_walls(pos, vel, radii, width, height)
                if k < 2 or not _resolve_pairs(pos, vel, radii, masses, dt):
                    break
            else:
                _resolve_walls(pos, vel, radii, width, height)  # stay inside even if a jam outlasts the passes
        out_pos[:, t], out_vel[:, t] = pos, vel
    return out_pos, out_vel


def kinetic_energy(velocities: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Total kinetic energy 1/2 sum_k m_k |v_k|^2. velocities (n, T, K, 2), masses (n, K) -> (n, T)."""
    return 0.5 * (masses[:, None, :] * (velocities**2).sum(-1)).sum(-1)
