"""Rasterisation shared by the generators: discs on the full pixel grid, shapes as signed-distance crops.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here n is the number of videos, K the number of objects, H, W the image
height and width in pixels, C the side of a crop around one object, R the resolution of a shape's distance table.

Anti-aliasing is a coverage ramp of the signed distance d from the pixel centre to the shape's edge (negative
inside): coverage = clip(0.5 - d, 0, 1), exact for straight edges, no supersampling. A mask label is given to a
pixel where coverage >= 0.5 (d <= 0), so masks agree with the drawn pixels by construction.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "SHAPES",
    "disc_fraction",
    "disc_distance",
    "coverage",
    "shape_table",
    "ObjectLayer",
    "composite",
    "visible_counts",
]

def disc_fraction(num_objects: int, radius_range: tuple[float, float]) -> float:
    """Expected fraction of the image covered by `num_objects` discs whose radius (a fraction of the image side) is
    uniform in `radius_range`, overlaps ignored, clamped to [1e-3, 0.5]: a prior for a decoder's output bias."""
    lo, hi = radius_range
    mean_r2 = (lo * lo + lo * hi + hi * hi) / 3  # E[r^2] for r ~ U(lo, hi)
    return float(min(0.5, max(1e-3, num_objects * math.pi * mean_r2)))


# Shapes in unit coordinates: the shape fits in the unit disc; its size in pixels scales these.
SHAPES = ("disc", "square", "triangle", "diamond", "star", "cross", "hexagon", "pentagon", "ring")
_TABLE_EXTENT = 1.25  # tables cover [-1.25, 1.25]^2 so the 0.5 px ramp outside any shape stays inside
_TABLE_RES = 321


def disc_distance(centres: np.ndarray, radii: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance to the nearest disc edge and the index of that disc, per pixel.

    centres: (F, K, 2) float (x, y) in pixels for F frames; radii: (F, K). Pixel (i, j) has centre (j + .5, i + .5).
    Returns distance (F, H, W) float32 (negative inside) and index (F, H, W) uint8 in [0, K), K <= 255.
    """
    if centres.ndim != 3 or centres.shape[-1] != 2 or radii.shape != centres.shape[:2]:
        raise ValueError(f"centres, radii: expected (F, K, 2) and (F, K), got {centres.shape} and {radii.shape}")
    ys = np.arange(height, dtype=np.float32) + 0.5
    xs = np.arange(width, dtype=np.float32) + 0.5
    c, r = centres.astype(np.float32), radii.astype(np.float32)
    dx2 = (xs - c[..., 0:1]) ** 2  # (F, K, W)
    dy2 = (ys - c[..., 1:2]) ** 2  # (F, K, H)
    dist = index = None
    for k in range(c.shape[1]):  # a running minimum over discs: faster than argmin over a (F, K, H, W) array
        d = dy2[:, k, :, None] + dx2[:, k, None, :]  # (F, H, W)
        np.sqrt(d, out=d)
        d -= r[:, k, None, None]
        if dist is None:
            dist, index = d, np.zeros(d.shape, np.uint8)
        else:
            closer = d < dist
            np.copyto(dist, d, where=closer)
            index[closer] = k
    return dist, index


def coverage(dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - dist, 0.0, 1.0)


def _polygon_sdf(q: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact signed distance from points q (..., 2) to a closed polygon verts (V, 2); negative inside."""
    d2 = np.full(q.shape[:-1], np.inf)
    inside = np.zeros(q.shape[:-1], dtype=bool)
    for a, b in zip(verts, np.roll(verts, -1, axis=0)):
        e, w = b - a, q - a  # (2,), (..., 2)
        h = np.clip((w @ e) / (e @ e), 0.0, 1.0)
        d2 = np.minimum(d2, ((w - h[..., None] * e) ** 2).sum(-1))
        # Even-odd rule: toggle when a horizontal ray from q crosses edge a-b.
        crosses = (a[1] > q[..., 1]) != (b[1] > q[..., 1])
        xcross = a[0] + (q[..., 1] - a[1]) * (b[0] - a[0]) / np.where(b[1] == a[1], 1.0, b[1] - a[1])
        inside ^= crosses & (q[..., 0] < xcross)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d2)


def _regular(k: int, radius: float, phase: float = -math.pi / 2) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(k) / k
    return radius * np.stack([np.cos(angles), np.sin(angles)], -1)


def _shape_vertices(name: str) -> np.ndarray:
    if name == "square":
        return np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
    if name == "triangle":  # equilateral, apex up (y down), centroid at the origin
        return _regular(3, 1.0)
    if name == "diamond":
        return np.array([[0.0, -1.0], [0.7, 0.0], [0.0, 1.0], [-0.7, 0.0]])
    if name == "star":  # five points, inner radius 0.45
        outer, inner = _regular(5, 1.0), _regular(5, 0.45, -math.pi / 2 + math.pi / 5)
        return np.stack([outer, inner], 1).reshape(10, 2)
    if name == "cross":
        a, b = 0.32, 0.95
        return np.array(
            [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]]
        )
    if name == "hexagon":
        return _regular(6, 0.9, 0.0)
    if name == "pentagon":
        return _regular(5, 0.95)
    raise ValueError(f"shape: unknown polygon {name!r}")


@functools.lru_cache(maxsize=None)
def shape_table(name: str) -> np.ndarray:
    """Signed distance (unit coordinates) of shape `name` sampled on a (R, R) grid over [-1.25, 1.25]^2, float32."""
    g = np.linspace(-_TABLE_EXTENT, _TABLE_EXTENT, _TABLE_RES)
    q = np.stack(np.meshgrid(g, g, indexing="xy"), -1)  # (R, R, 2), q[iy, ix] = (x, y)
    r = np.linalg.norm(q, axis=-1)
    if name == "disc":
        sdf = r - 0.9
    elif name == "ring":
        sdf = np.abs(r - 0.68) - 0.27
    else:
        sdf = _polygon_sdf(q, _shape_vertices(name))
    return sdf.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _tables() -> np.ndarray:
    return np.stack([shape_table(s) for s in SHAPES])  # (len(SHAPES), R, R)


class ObjectLayer:
    """One object per video to draw at one depth: arrays over n videos (and T frames where they move).

    centres (n, T, 2) pixels; size (n,) pixels (the unit shape scaled); angle (n, T) radians; shape (n,) index
    into SHAPES; color (n, 3) float; label (n,) the mask value to write (0: draw without labelling);
    present (n,) bool.
    """

    def __init__(self, centres, size, angle, shape, color, label, present):
        self.centres, self.size, self.angle = centres, size, angle
        self.shape, self.color, self.label, self.present = shape, color, label, present


def composite(canvas: np.ndarray, seg: np.ndarray, layer: ObjectLayer, pad: int, hard: bool = False) -> None:
    """Draw `layer` over `canvas` in place (alpha from coverage) and label its pixels in `seg`.

    canvas: (n, T, H + 2 pad, W + 2 pad, 3) float32, padded by `pad` pixels on each side so crops never leave it;
    seg: (n, T, H + 2 pad, W + 2 pad) uint8. Each object is drawn in a (C, C) crop, C = 2 pad - 1.
    hard: no anti-aliasing (coverage 1 where d <= 0, else 0).
    """
    live = np.flatnonzero(layer.present)  # videos where this layer has an object
    if len(live) == 0:
        return
    t, hp, wp = canvas.shape[1:4]
    c, half = 2 * pad - 1, pad - 1
    cen = layer.centres[live].astype(np.float32)  # (n', T, 2)
    cx, cy = cen[..., 0], cen[..., 1]
    x0 = np.floor(cx).astype(np.int64) - half  # (n', T) crop origin in image coordinates
    y0 = np.floor(cy).astype(np.int64) - half
    offs = np.arange(c)
    xx, yy = x0[..., None] + offs, y0[..., None] + offs  # (n', T, C)
    size = layer.size[live].astype(np.float32)[:, None, None]  # (n', 1, 1)
    dx = (xx + np.float32(0.5) - cx[..., None]) / size  # (n', T, C) unit coordinates
    dy = (yy + np.float32(0.5) - cy[..., None]) / size
    angle = layer.angle[live].astype(np.float32)
    cos, sin = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]  # (n', T, 1, 1)
    qx = cos * dx[..., None, :] + sin * dy[..., :, None]  # (n', T, C, C) rotate by -angle
    qy = cos * dy[..., :, None] - sin * dx[..., None, :]
    scale = np.float32((_TABLE_RES - 1) / (2 * _TABLE_EXTENT))
    ix = np.rint((qx + _TABLE_EXTENT) * scale).astype(np.int64)
    iy = np.rint((qy + _TABLE_EXTENT) * scale).astype(np.int64)
    outside = (ix < 0) | (ix >= _TABLE_RES) | (iy < 0) | (iy >= _TABLE_RES)
    np.clip(ix, 0, _TABLE_RES - 1, out=ix)
    np.clip(iy, 0, _TABLE_RES - 1, out=iy)
    flat_table = _tables().reshape(-1)
    sdf = flat_table[(layer.shape[live] * _TABLE_RES * _TABLE_RES)[:, None, None, None] + iy * _TABLE_RES + ix]
    dist = np.where(outside, np.float32(1e3), sdf * size[..., None])
    alpha = ((dist <= 0).astype(np.float32) if hard else coverage(dist))[..., None]  # (n', T, C, C, 1)
    # Flat pixel index into the padded canvas.
    frame = (live[:, None] * t + np.arange(t))[..., None, None]  # (n', T, 1, 1)
    idx = (frame * hp + (yy + pad)[..., :, None]) * wp + (xx + pad)[..., None, :]  # (n', T, C, C)
    pixels = canvas.reshape(-1, 3)
    color = layer.color[live].astype(np.float32)[:, None, None, None, :]  # (n', 1, 1, 1, 3)
    old = pixels[idx]  # (n', T, C, C, 3)
    pixels[idx] = old + (color - old) * alpha
    labels = seg.reshape(-1)
    lab = layer.label[live].astype(np.uint8)[:, None, None, None]
    keep = (dist > 0) | (lab == 0)  # label where d <= 0, i.e. coverage >= 0.5
    labels[idx] = np.where(keep, labels[idx], lab)


def visible_counts(seg: np.ndarray, num_labels: int) -> np.ndarray:
    """Pixels per label in each frame. seg (n, T, H, W) uint8 -> counts (n, T, num_labels) int64."""
    n, t = seg.shape[:2]
    flat = seg.reshape(n * t, -1).astype(np.int64) + num_labels * np.arange(n * t)[:, None]
    return np.bincount(flat.ravel(), minlength=n * t * num_labels).reshape(n, t, num_labels)
