"""Evaluation metrics: segmentation (ARI, FG-ARI, mIoU), classification, prediction error, attribute probes.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here also C classes, F feature width, R regression targets.

Numpy in, numpy out: every function also accepts torch tensors (converted with `.detach().cpu().numpy()`).
Segmentation metrics are per video: all pixels of all frames of one video are scored together.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from slotssm.arrays import to_numpy

__all__ = [
    "ari", "miou", "topk_accuracy", "grid_l1", "per_step_mse", "match_slots_to_objects",
    "linear_probe_accuracy", "mlp_probe_r2", "r2_score",
]


def _contingency(true_ids: Any, pred_ids: Any, weights: np.ndarray | None = None):
    """Per-video contingency tables of two integer id arrays of the same shape (B, ...).

    Returns (table (B, Ct, Cp) int64, true_values (Ct,), pred_values (Cp,)): table[b, i, j] counts the pixels of
    video b whose true id is true_values[i] and predicted id is pred_values[j] (weighted by `weights` if given).
    """
    t, p = to_numpy(true_ids), to_numpy(pred_ids)
    if t.shape != p.shape or t.ndim < 2:
        raise ValueError(f"pred_ids: expected the shape of true_ids {t.shape} (B, ...), got {p.shape}")
    for name, a in (("true_ids", t), ("pred_ids", p)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name}: expected integer ids, got dtype {a.dtype}")
    B = t.shape[0]
    tv, ti = np.unique(t, return_inverse=True)  # compact ids shared by the batch
    pv, pi = np.unique(p, return_inverse=True)
    ct, cp = len(tv), len(pv)
    flat = (np.arange(B)[:, None] * (ct * cp) + ti.reshape(B, -1) * cp + pi.reshape(B, -1)).ravel()
    w = None if weights is None else weights.reshape(-1).astype(np.int64)
    table = np.bincount(flat, weights=w, minlength=B * ct * cp).astype(np.int64)
    return table.reshape(B, ct, cp), tv, pv


def ari(true_ids: Any, pred_ids: Any, ignore_background: bool = False) -> np.ndarray:
    """Adjusted Rand index per video, vectorised over the batch.

    Args:
        true_ids, pred_ids: integer arrays (B, ...), e.g. (B, T, H, W); ids need not be contiguous.
        ignore_background: FG-ARI: pixels whose true id is 0 are left out.

    Returns:
        (B,) float64. Same values as sklearn.metrics.adjusted_rand_score per video, including its special case
        (identical partitions, e.g. one cluster in both -> 1.0). With `ignore_background`, a video without any
        foreground pixel scores NaN (use np.nanmean).
    """
    t = to_numpy(true_ids)
    weights = (t != 0) if ignore_background else None
    n_ij, _, _ = _contingency(t, pred_ids, weights)
    n_ij = n_ij.astype(np.float64)  # exact for counts < 2**53
    n = n_ij.sum(axis=(1, 2))  # (B,)
    sum_sq = (n_ij**2).sum(axis=(1, 2))
    sum_a_sq = (n_ij.sum(axis=2) ** 2).sum(axis=1)  # rows: true clusters
    sum_b_sq = (n_ij.sum(axis=1) ** 2).sum(axis=1)  # columns: predicted clusters
    # Pair confusion matrix (ordered pairs), as sklearn.metrics.cluster.pair_confusion_matrix.
    tp = sum_sq - n
    fp = sum_a_sq - sum_sq  # same true cluster, different predicted
    fn = sum_b_sq - sum_sq
    tn = n**2 - fp - fn - sum_sq
    denom = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 2.0 * (tp * tn - fn * fp) / denom
    out = np.where((fn == 0) & (fp == 0), 1.0, out)
    if ignore_background:
        out = np.where(n == 0, np.nan, out)
    return out


def _iou_matrix(n_ij: np.ndarray) -> np.ndarray:
    """IoU of every (true, predicted) pair from one contingency table (Ct, Cp)."""
    a = n_ij.sum(1, keepdims=True)  # (Ct, 1)
    b = n_ij.sum(0, keepdims=True)  # (1, Cp)
    union = a + b - n_ij
    return np.where(union > 0, n_ij / np.maximum(union, 1), 0.0)


def _matched(true_ids: Any, pred_ids: Any, ignore_background: bool):
    """Yield, per video, (object ids present, IoU matrix objects x predicted values, predicted values)."""
    table, tv, pv = _contingency(true_ids, pred_ids)
    keep = tv != 0 if ignore_background else np.ones(len(tv), bool)
    for n_ij in table:
        iou = _iou_matrix(n_ij)
        rows = keep & (n_ij.sum(1) > 0)  # objects present in this video
        yield tv[rows], iou[rows], pv


def miou(true_ids: Any, pred_ids: Any, ignore_background: bool = True) -> np.ndarray:
    """Mean IoU per video after Hungarian matching of true objects to predicted segments.

    Args:
        true_ids, pred_ids: integer arrays (B, ...). IoUs are over all pixels (a predicted segment's pixels on the
            background count in its union).
        ignore_background: true id 0 is not an object to match.

    Returns:
        (B,) float64: mean over the true objects present in the video of the IoU with their matched segment
        (0 for objects left unmatched when there are fewer segments than objects); NaN if no object is present.
    """
    out = []
    for _, iou, _ in _matched(true_ids, pred_ids, ignore_background):
        if len(iou) == 0:
            out.append(np.nan)
            continue
        r, c = linear_sum_assignment(iou, maximize=True)
        out.append(iou[r, c].sum() / len(iou))
    return np.asarray(out, dtype=np.float64)


def match_slots_to_objects(slot_masks: Any, true_ids: Any, *, slot_axis: int | None = None,
                           num_ids: int | None = None, ignore_background: bool = True) -> np.ndarray:
    """Assign one slot to each true object by IoU of hard masks and Hungarian matching.

    Args:
        slot_masks: (B, T, K, H, W) or (B, K, ...) soft or hard masks; each pixel goes to its argmax slot.
        true_ids: integer ids with the shape of slot_masks without the slot axis, e.g. (B, T, H, W).
        slot_axis: axis of K in slot_masks (default 2 for 5-d masks, else 1).
        num_ids: width of the result (default: max true id + 1).
        ignore_background: id 0 gets no slot.

    Returns:
        (B, num_ids) int64: entry [b, i] is the slot matched to the object with id i in video b, or -1 when that
        object is absent (or ignored, or unmatched because there are more objects than slots).
    """
    m, t = to_numpy(slot_masks), to_numpy(true_ids)
    axis = slot_axis if slot_axis is not None else (2 if m.ndim == 5 else 1)
    if m.ndim != t.ndim + 1 or m.shape[:axis] + m.shape[axis + 1:] != t.shape:
        raise ValueError(f"slot_masks: expected true_ids' shape {t.shape} with a slot axis at {axis}, got {m.shape}")
    if t.size and t.min() < 0:
        raise ValueError("true_ids: expected ids >= 0")
    width = int(t.max()) + 1 if num_ids is None else num_ids
    if t.size and t.max() >= width:
        raise ValueError(f"num_ids: must exceed the largest true id {int(t.max())}, got {num_ids}")
    pred = m.argmax(axis=axis)
    out = np.full((t.shape[0], width), -1, dtype=np.int64)
    for b, (ids, iou, pv) in enumerate(_matched(t, pred, ignore_background)):
        r, c = linear_sum_assignment(iou, maximize=True)
        out[b, ids[r]] = pv[c]
    return out


def topk_accuracy(logits: Any, labels: Any, k: Sequence[int] | int = (1, 5)) -> dict[str, float]:
    """Top-k accuracy for each k: logits (B, C), labels (B,) -> {"top1": ..., "top5": ...} (k capped at C)."""
    lg, y = to_numpy(logits), to_numpy(labels)
    if lg.ndim != 2 or y.shape != (lg.shape[0],):
        raise ValueError(f"labels: expected shape ({lg.shape[0] if lg.ndim else '?'},) for logits (B, C) "
                         f"{lg.shape}, got {y.shape}")
    ks = (k,) if isinstance(k, int) else tuple(k)
    order = np.argsort(-lg, axis=1, kind="stable")  # (B, C) best first
    hit_rank = (order == y[:, None]).argmax(axis=1)  # (B,) rank of the true class
    return {f"top{kk}": float((hit_rank < min(kk, lg.shape[1])).mean()) for kk in ks}


def grid_l1(logits_or_pred: Any, labels: Any, grid: int = 6) -> float:
    """Mean L1 distance, in grid cells, between predicted and true class on a grid x grid board.

    Class c sits at row c // grid, column c % grid. logits_or_pred: logits (B, grid*grid) or class ids (B,);
    labels (B,).
    """
    p, y = to_numpy(logits_or_pred), to_numpy(labels)
    if p.ndim == 2:
        if p.shape[1] != grid * grid:
            raise ValueError(f"logits_or_pred: expected shape (B, {grid * grid}) or (B,), got {p.shape}")
        p = p.argmax(axis=1)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"labels: expected shape {p.shape}, got {y.shape}")
    return float((np.abs(p // grid - y // grid) + np.abs(p % grid - y % grid)).mean())


def per_step_mse(pred: Any, target: Any, time_dim: int = 1) -> np.ndarray:
    """Mean squared error per time step: pred, target (B, T, ...) -> (T,) float64 (mean over all other axes)."""
    p, t = to_numpy(pred).astype(np.float64), to_numpy(target).astype(np.float64)
    if p.shape != t.shape:
        raise ValueError(f"target: expected shape {p.shape} (that of pred), got {t.shape}")
    if not -p.ndim <= time_dim < p.ndim:
        raise ValueError(f"time_dim: expected an axis of a {p.ndim}-d array, got {time_dim}")
    err = np.moveaxis((p - t) ** 2, time_dim, 0)
    return err.reshape(err.shape[0], -1).mean(axis=1)


def r2_score(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination, averaged uniformly over outputs (sklearn's default): (N,) or (N, R)."""
    y, p = to_numpy(y_true).astype(np.float64), to_numpy(y_pred).astype(np.float64)
    y, p = y.reshape(len(y), -1), p.reshape(len(p), -1)
    ss_res = ((y - p) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
    return float(r2.mean())


def _split(n: int, train_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac: expected a value in (0, 1), got {train_frac}")
    perm = np.random.default_rng(seed).permutation(n)
    cut = min(max(1, int(round(train_frac * n))), n - 1)
    return perm[:cut], perm[cut:]


@contextlib.contextmanager
def _single_thread():
    """Probe fits are tiny matmuls: extra intra-op threads only add synchronisation (30x slower on a busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _standardise(x: torch.Tensor, train: np.ndarray) -> torch.Tensor:
    mu, sd = x[train].mean(0), x[train].std(0, unbiased=False)
    return (x - mu) / torch.where(sd > 0, sd, torch.ones_like(sd))


def linear_probe_accuracy(features: Any, labels: Any, *, train_frac: float = 0.8, seed: int = 0,
                          l2: float = 1e-3, max_iter: int = 200, fit_rows: int | None = None) -> float:
    """Test accuracy of a multinomial logistic regression fitted on a random train split (deterministic).

    Args:
        features: (N, F) floats.  labels: (N,) integer classes.
        train_frac: fraction of samples used to fit; the rest is scored.
        seed: seed of the split.  l2: ridge penalty on the weights.  max_iter: L-BFGS iterations (float64).
        fit_rows: instead of a random split, fit the first `fit_rows` samples and score the rest (say, training
            videos then held-out ones).
    """
    x = torch.as_tensor(to_numpy(features), dtype=torch.float64)
    y_np = to_numpy(labels)
    if x.ndim != 2 or y_np.shape != (x.shape[0],):
        raise ValueError(f"labels: expected shape ({x.shape[0]},) for features (N, F) {tuple(x.shape)}, "
                         f"got {y_np.shape}")
    classes, y_idx = np.unique(y_np, return_inverse=True)
    y = torch.as_tensor(y_idx, dtype=torch.long)
    if fit_rows is None:
        tr, te = _split(len(x), train_frac, seed)
    elif 0 < fit_rows < len(x):
        tr, te = np.arange(fit_rows), np.arange(fit_rows, len(x))
    else:
        raise ValueError(f"fit_rows: expected 0 < fit_rows < N = {len(x)}, got {fit_rows}")
    x = _standardise(x, tr)
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[tr] @ w + b, y[tr]) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad(), _single_thread():
        opt.step(closure)
    with torch.no_grad():
        return float(((x[te] @ w + b).argmax(1) == y[te]).double().mean())


def mlp_probe_r2(features: Any, targets: Any, *, hidden: int = 64, steps: int = 300, lr: float = 1e-2,
                 train_frac: float = 0.8, seed: int = 0, weight_decay: float = 1e-4) -> float:
    """Test R^2 of a one-hidden-layer MLP regressor fitted with full-batch Adam on a random train split.

    Args:
        features: (N, F) floats.  targets: (N,) or (N, R) floats.
        hidden: hidden width.  steps: Adam steps.  lr: learning rate.  weight_decay: Adam weight decay.
        train_frac, seed: the split (and the initialisation) are deterministic given `seed`.
    """
    x = torch.as_tensor(to_numpy(features), dtype=torch.float64)
    y = torch.as_tensor(to_numpy(targets), dtype=torch.float64)
    if x.ndim != 2 or y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"targets: expected shape ({x.shape[0]},) or ({x.shape[0]}, R), got {tuple(y.shape)}")
    y = y.reshape(len(y), -1)  # (N, R)
    tr, te = _split(len(x), train_frac, seed)
    x, ys = _standardise(x, tr), _standardise(y, tr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(),
                                  torch.nn.Linear(hidden, y.shape[1])).double()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad(), _single_thread():
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x[tr]), ys[tr]).backward()
            opt.step()
    with torch.no_grad():
        pred = net(x[te])
    return r2_score(ys[te].numpy(), pred.numpy())  # R^2 is invariant to the targets' standardisation
