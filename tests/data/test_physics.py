"""Bouncing balls: energy and momentum, no overlaps, inside the frame, rendering agrees with the state."""

import numpy as np
import pytest

from slotssm.data import generate
from slotssm.data.physics import kinetic_energy, simulate_discs


@pytest.fixture(scope="module")
def crowded():
    # Many fast balls for 120 frames: hundreds of collisions.
    return generate(
        "bouncing_balls", 6, seed=3, num_frames=120, image_size=48, num_objects=8, speed_range=(0.05, 0.08),
        radius_range=(0.06, 0.09), mass_range=(0.5, 6.0),
    )


def _ball_collisions(out):
    """Frames where some ball changed velocity without touching a wall (so it hit another ball)."""
    v, pos, r = out["velocities"], out["positions"], out["radii"]
    changed = np.abs(np.diff(v, axis=1)).sum(-1) > 1e-9  # (n, T-1, K)
    size = 48
    edge = r[:, None, :, None]
    near_wall = ((pos[:, 1:] - edge) < 3.5).any(-1) | ((pos[:, 1:] + edge) > size - 3.5).any(-1)
    return (changed & ~near_wall).sum()


def test_energy_is_conserved_through_many_collisions(crowded):
    assert _ball_collisions(crowded) > 100
    energy = kinetic_energy(crowded["velocities"], crowded["masses"])  # (n, T)
    rel = np.abs(energy / energy[:, :1] - 1)
    assert rel.max() <= 1e-6


def test_no_overlap_and_inside_the_frame(crowded):
    pos, r = crowded["positions"], crowded["radii"]  # (n, T, K, 2), (n, K)
    dist = np.linalg.norm(pos[:, :, :, None] - pos[:, :, None], axis=-1)  # (n, T, K, K)
    reach = r[:, None, :, None] + r[:, None, None, :]
    overlap = (reach - dist) / np.minimum(r[:, None, :, None], r[:, None, None, :])
    k = pos.shape[2]
    overlap[:, :, np.arange(k), np.arange(k)] = -np.inf
    assert overlap.max() <= 0.01
    rr = r[:, None, :, None]
    assert (pos >= rr - 1e-9).all() and (pos <= 48 - rr + 1e-9).all()


def test_head_on_collision_matches_the_1d_formula():
    # Two balls on a line, far from walls: v1' = ((m1 - m2) v1 + 2 m2 v2) / (m1 + m2), and symmetric.
    m1, m2, v1, v2 = 1.0, 3.0, 2.0, -1.0
    pos0 = np.array([[[40.0, 50.0], [60.0, 50.0]]])
    vel0 = np.array([[[v1, 0.0], [v2, 0.0]]])
    _, vel = simulate_discs(pos0, vel0, np.array([[4.0, 4.0]]), np.array([[m1, m2]]), width=100.0, height=100.0,
                            num_frames=10, substeps=8)
    final = vel[0, -1, :, 0]
    expect = [((m1 - m2) * v1 + 2 * m2 * v2) / (m1 + m2), ((m2 - m1) * v2 + 2 * m1 * v1) / (m1 + m2)]
    np.testing.assert_allclose(final, expect, rtol=1e-12)
    np.testing.assert_allclose(m1 * final[0] + m2 * final[1], m1 * v1 + m2 * v2, rtol=1e-12)


def test_masses_from_a_set():
    out = generate("bouncing_balls", 4, seed=0, num_frames=2, mass_values=(1, 2, 4))
    assert set(np.unique(out["masses"])) <= {1.0, 2.0, 4.0}


def test_frames_and_ids_agree_with_positions():
    out = generate("bouncing_balls", 3, seed=2, num_frames=5, image_size=64, num_objects=5)
    frames, ids, pos = out["frames"], out["ids"], out["positions"]
    n, t, k, _ = pos.shape
    col = np.floor(pos[..., 0]).astype(int)
    row = np.floor(pos[..., 1]).astype(int)
    vi, ti = np.meshgrid(np.arange(n), np.arange(t), indexing="ij")
    for j in range(k):
        assert (frames[vi, ti, row[..., j], col[..., j]] == 255).all()
        assert (ids[vi, ti, row[..., j], col[..., j]] == j + 1).all()
    # Background is black, edges are anti-aliased (grey values exist), every lit pixel of a labelled disc.
    assert (frames[ids == 0] < 128).all() and (frames[ids > 0] >= 128).all()
    assert ((frames > 0) & (frames < 255)).any()
    # Disc area in pixels ~ pi r^2.
    area = (ids[:, 0] == 1).sum((1, 2))
    np.testing.assert_allclose(area, np.pi * out["radii"][:, 0] ** 2, rtol=0.15)
