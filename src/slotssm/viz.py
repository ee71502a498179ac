"""Pictures of runs: frame grids, rollouts as GIF, slot attention argmax maps, metric curves.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size.

Frames are (T, height, width) or (T, height, width, C) with C in {1, 3, 4}, float in [0, 1] (clipped) or uint8;
(T, C, height, width) is accepted too and transposed. numpy arrays or torch tensors. Every function writes a file
(creating its folder) and returns its path; matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import imageio.v3 as iio
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from slotssm.arrays import to_numpy  # noqa: E402

__all__ = ["to_uint8", "frame_grid", "save_gif", "slot_palette", "attention_argmax_maps", "plot_curves",
           "plot_metric_curves_from_jsonl"]


def to_uint8(frames: Any) -> np.ndarray:
    """Frames in any accepted layout -> uint8 (T, height, width, 3)."""
    f = to_numpy(frames, float32=True)
    if f.ndim == 3:
        f = f[..., None]
    if f.ndim != 4:
        raise ValueError(f"frames: expected shape (T, height, width[, C]), got {f.shape}")
    if f.shape[-1] not in (1, 3, 4) and f.shape[1] in (1, 3, 4):
        f = f.transpose(0, 2, 3, 1)  # (T, C, h, w) -> (T, h, w, C)
    if f.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames: expected 1, 3 or 4 channels, got shape {f.shape}")
    if f.dtype != np.uint8:
        f = (np.clip(f.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    f = f[..., :3]  # drop alpha
    return np.repeat(f, 3, axis=-1) if f.shape[-1] == 1 else f


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig, path: str | Path) -> Path:
    """Lay out, write and close a matplotlib figure; returns the path written."""
    fig.tight_layout()
    path = _prepare(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def frame_grid(rows: Mapping[str, Any], path: str | Path, *, max_cols: int | None = None,
               cell_inches: float = 1.2, dpi: int = 100, column: str = "t") -> Path:
    """One row per entry of `rows` (e.g. "ground truth", "prediction"), one column per time step; saves a PNG.

    Args:
        rows: name -> frames (T, height, width[, C]); rows may differ in T (missing cells stay blank).
        max_cols: show at most this many time steps (evenly spaced).
        cell_inches, dpi: each cell is cell_inches x cell_inches at `dpi`.
        column: what a column is, in its titles ("t=3"; "slot" for one column per slot).
    """
    if not rows:
        raise ValueError("rows: expected at least one row, got none")
    data = {name: to_uint8(f) for name, f in rows.items()}
    T = max(len(f) for f in data.values())
    cols = np.arange(T) if max_cols is None or max_cols >= T else np.linspace(0, T - 1, max_cols).round().astype(int)
    fig, axes = plt.subplots(len(data), len(cols), figsize=(cell_inches * len(cols), cell_inches * len(data)),
                             squeeze=False, dpi=dpi)
    for r, (name, frames) in enumerate(data.items()):
        for c, t in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if t < len(frames):
                ax.imshow(frames[t], interpolation="nearest")
            if r == 0:
                ax.set_title(f"{column}={t}" if column == "t" else f"{column} {t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout(pad=0.2)
    path = _prepare(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_gif(frames: Any, path: str | Path, fps: float = 4.0, *, scale: int = 1) -> Path:
    """Frames (T, height, width[, C]) -> an endlessly looping GIF, each frame enlarged `scale` times (nearest)."""
    f = to_uint8(frames)
    if scale > 1:
        f = f.repeat(scale, axis=1).repeat(scale, axis=2)
    path = _prepare(path)
    iio.imwrite(path, f, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def slot_palette(k: int) -> np.ndarray:
    """(k, 3) uint8 distinct colours (tab10, then tab20, then hsv)."""
    name = "tab10" if k <= 10 else "tab20" if k <= 20 else "hsv"
    cmap = matplotlib.colormaps[name]
    vals = [cmap(i) for i in range(k)] if name != "hsv" else [cmap(i / k) for i in range(k)]
    return (np.asarray(vals)[:, :3] * 255 + 0.5).astype(np.uint8)


def _join(images: list[np.ndarray], axis: int, pad: int) -> np.ndarray:
    """Concatenate (h, w, 3) uint8 images along `axis` with `pad` white pixels between them."""
    shape = list(images[0].shape)
    shape[axis] = pad
    gap = np.full(shape, 255, np.uint8)
    parts = [part for img in images for part in (img, gap)][:-1]
    return np.concatenate(parts, axis=axis)


_PANEL_MIN = 96  # each panel of the attention picture is at least this many pixels on its short side
_PANEL_COLS = 8  # at most this many time steps per row; more wrap into further rows


def attention_argmax_maps(attn: Any, path: str | Path, grid: tuple[int, int] | None = None, *,
                          frames: Any = None, scale: int = 8, pad: int = 2) -> Path:
    """Colour each patch by the slot with the largest attention (paper App. D.1); saves a PNG (or a GIF).

    Args:
        attn: (T, M, K) with M = h * w patches in row-major order, or (T, h, w, K).
        grid: (h, w) for (T, M, K) input (default: square).
        frames: optional (T, height, width[, C]) shown above the maps, with the maps over them at half opacity
            below (maps are then enlarged to height x width; height and width must be multiples of h and w).
        scale: enlargement of the maps when no frames are given.  pad: white pixels between panels (at least 8
            in the PNG, where step titles need the room).

    Output: a titled PNG with one panel per time step ("t=0", "t=1", ...), at most 8 per row (more wrap), each
    panel enlarged (nearest neighbour) to at least 96 px on its short side, and a colour key naming the slots;
    or, when `path` ends with .gif, one frame per time step (frames and overlay stacked, not enlarged).
    """
    a = to_numpy(attn, float32=True)
    if a.ndim == 3:
        T, M, K = a.shape
        h, w = grid if grid is not None else (math.isqrt(M), math.isqrt(M))
        if h * w != M:
            raise ValueError(f"grid: expected h * w == M = {M}, got {grid}")
        a = a.reshape(T, h, w, K)
    if a.ndim != 4:
        raise ValueError(f"attn: expected shape (T, M, K) or (T, h, w, K), got {a.shape}")
    T, h, w, K = a.shape
    maps = slot_palette(K)[a.argmax(-1)]  # (T, h, w, 3)
    if frames is None:
        rows = {"slots": maps.repeat(scale, 1).repeat(scale, 2)}
    else:
        f = to_uint8(frames)
        if len(f) != T or f.shape[1] % h or f.shape[2] % w:
            raise ValueError(f"frames: expected ({T}, multiple of {h}, multiple of {w}[, C]), got {f.shape}")
        big = maps.repeat(f.shape[1] // h, 1).repeat(f.shape[2] // w, 2)
        rows = {"frame": f, "slots": ((f.astype(np.uint16) + big) // 2).astype(np.uint8)}
    path = _prepare(path)
    if path.suffix.lower() == ".gif":
        return save_gif(np.concatenate(list(rows.values()), axis=1), path)
    return _panel_figure(rows, K, path, gap=max(pad, 8))


def _panel_figure(rows: dict[str, np.ndarray], K: int, path: Path, gap: int, dpi: int = 100) -> Path:
    """Lay out rows {name: (T, h', w', 3)} as titled panels in pixel units (no tight_layout), with a slot key."""
    from matplotlib.patches import Patch

    T, h, w = next(iter(rows.values())).shape[:3]
    s = max(1, math.ceil(_PANEL_MIN / min(h, w)))  # integer factor: nearest-neighbour enlargement
    ph, pw = h * s, w * s
    cols, groups, R = min(T, _PANEL_COLS), math.ceil(T / _PANEL_COLS), len(rows)
    left, top, step_h, sub_gap = (56 if R > 1 else 8), 36, 18, 4
    group_h = step_h + R * ph + (R - 1) * sub_gap
    key_cols = max(1, min(K, 8, (max(cols * (pw + gap), 420) - 16) // 72))
    bottom = 12 + 22 * math.ceil(K / key_cols)
    W = max(left + cols * pw + (cols - 1) * gap + 8, 420)
    H = top + groups * group_h + (groups - 1) * gap + bottom
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi, facecolor="white")
    for t in range(T):
        g, c = divmod(t, cols)
        x = left + c * (pw + gap)
        for r, (name, imgs) in enumerate(rows.items()):
            y = top + g * (group_h + gap) + step_h + r * (ph + sub_gap)  # top edge of the panel, from the top
            ax = fig.add_axes((x / W, 1 - (y + ph) / H, pw / W, ph / H))
            ax.imshow(imgs[t].repeat(s, 0).repeat(s, 1), interpolation="nearest", aspect="auto")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t}", fontsize=9, pad=3)
            if R > 1 and c == 0:
                fig.text((left - 4) / W, 1 - (y + ph / 2) / H, name, ha="right", va="center", fontsize=9)
    fig.suptitle(f"Slot attention: argmax slot per patch ({K} slots)", y=1 - 8 / H, va="top", fontsize=11)
    pal = slot_palette(K) / 255.0
    fig.legend([Patch(color=pal[k]) for k in range(K)], [f"slot {k}" for k in range(K)], loc="lower center",
               ncol=key_cols, fontsize=8, frameon=False, handlelength=1.2, columnspacing=1.0)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_curves(curves: Mapping[str, Any], path: str | Path, xlabel: str = "step", ylabel: str = "",
                title: str = "", *, logy: bool = False) -> Path:
    """Line plot of named curves: name -> (x, y) or a sequence of y (x = 0, 1, ...); saves a PNG."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, curve in curves.items():
        if isinstance(curve, tuple) and len(curve) == 2 and np.ndim(curve[0]) == 1:
            x, y = to_numpy(curve[0], float32=True).astype(float), to_numpy(curve[1], float32=True).astype(float)
        else:
            y = to_numpy(curve, float32=True).astype(float)
            x = np.arange(len(y))
        if x.shape != y.shape or y.ndim != 1:
            raise ValueError(f"curves[{name!r}]: expected 1-d x and y of equal length, got {x.shape}, {y.shape}")
        ax.plot(x, y, label=name, marker="." if len(y) < 30 else None)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_bars(groups: Mapping[str, Mapping[str, tuple[float, float]]], path: str | Path, ylabel: str = "",
              title: str = "", *, refs: Mapping[str, Mapping[str, float]] | None = None) -> Path:
    """Grouped bar chart with error bars: groups {group: {series: (mean, std)}}; refs {group: {name: value}} are
    drawn as black lines across their group (one line style per name). Saves a PNG."""
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    for g, row in groups.items():
        for s, v in row.items():
            if np.shape(v) != (2,):
                raise ValueError(f"groups[{g!r}][{s!r}]: expected (mean, std), got {v!r}")
    n, width = len(series), 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.5, 4.5 + 0.45 * n * len(groups))), 3.5), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(series):
        at = [(gi, row[s]) for gi, row in enumerate(groups.values()) if s in row]
        ax.bar([gi + (i - (n - 1) / 2) * width for gi, _ in at], [v[0] for _, v in at], width,
               yerr=[v[1] for _, v in at], capsize=2, label=s, color=colours[i % len(colours)])
    styles, labelled = {}, set()
    for gi, g in enumerate(groups):
        for name, v in (refs or {}).get(g, {}).items():
            if v is None or not np.isfinite(v):
                continue
            style = styles.setdefault(name, (":", "--", "-.", (0, (5, 1)))[len(styles) % 4])
            ax.hlines(v, gi - 0.45, gi + 0.45, colors="k", linestyles=style,
                      label=None if name in labelled else f"reference: {name}")
            labelled.add(name)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)  # also "nan" / "inf" strings written for non-finite values
    except (TypeError, ValueError):
        return None


def plot_metric_curves_from_jsonl(metrics_jsonl: str | Path, out_dir: str | Path, *,
                                  skip: Sequence[str] = ("step", "split", "time")) -> list[Path]:
    """One PNG per metric of a metrics.jsonl (records with `step` and `split`), one curve per split.

    A torn (unparsable) line is skipped. A metric with no split of two or more points (e.g. one final validation)
    is no curve and gets no PNG. Returns the written paths, sorted by metric name.
    """
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for i, line in enumerate(Path(metrics_jsonl).read_text().splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        step, split = _as_float(rec.get("step", i)), str(rec.get("split", "train"))
        for key, value in rec.items():
            v = _as_float(value)
            if key not in skip and v is not None and step is not None:
                series.setdefault(key, {}).setdefault(split, []).append((step, v))
    paths = []
    for key in sorted(series):
        if max(len(pts) for pts in series[key].values()) < 2:
            continue
        curves = {split: tuple(np.asarray(sorted(pts)).T) for split, pts in series[key].items()}
        finite = [y[np.isfinite(y)] for _, y in curves.values()]
        logy = key.lower().endswith(("loss", "mse")) and all(len(y) and (y > 0).all() for y in finite)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
        paths.append(plot_curves(curves, Path(out_dir) / f"{name}.png", "step", key, key, logy=logy))
    return paths
