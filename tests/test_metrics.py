import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics import r2_score as sk_r2

from slotssm import metrics


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ari_matches_sklearn(seed):
    rng = _rng(seed)
    t = rng.integers(0, 5, size=(4, 3, 6, 6))
    p = rng.integers(0, 7, size=(4, 3, 6, 6)) * 3 - 5  # arbitrary, non-contiguous, negative ids
    p[1] = t[1] * 2 + 1  # one perfect (relabelled) prediction
    got = metrics.ari(t, p)
    want = [adjusted_rand_score(t[b].ravel(), p[b].ravel()) for b in range(4)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[1] == 1.0
    # FG-ARI == sklearn on the foreground pixels only
    got_fg = metrics.ari(torch.as_tensor(t), torch.as_tensor(p), ignore_background=True)
    want_fg = [adjusted_rand_score(t[b][t[b] != 0], p[b][t[b] != 0]) for b in range(4)]
    np.testing.assert_allclose(got_fg, want_fg, atol=1e-12)


def test_ari_degenerate_cases():
    ones = np.zeros((1, 10), dtype=int)
    assert metrics.ari(ones, ones)[0] == 1.0 == adjusted_rand_score(ones[0], ones[0])
    singletons = np.arange(10)[None]
    assert metrics.ari(singletons, singletons)[0] == 1.0
    np.testing.assert_allclose(metrics.ari(ones, singletons), [adjusted_rand_score(ones[0], singletons[0])])
    # a video without foreground pixels has no FG-ARI
    assert np.isnan(metrics.ari(ones, singletons, ignore_background=True)[0])
    with pytest.raises(ValueError, match="pred_ids"):
        metrics.ari(ones, np.zeros((1, 9), dtype=int))
    with pytest.raises(TypeError, match="pred_ids"):
        metrics.ari(ones, np.zeros((1, 10)))


def _miou_ref(t, p, ignore_background=True):
    objs = [o for o in np.unique(t) if not (ignore_background and o == 0)]
    segs = np.unique(p)
    if not objs:
        return np.nan
    iou = np.array([[((t == o) & (p == s)).sum() / ((t == o) | (p == s)).sum() for s in segs] for o in objs])
    r, c = linear_sum_assignment(-iou)
    return iou[r, c].sum() / len(objs)


@pytest.mark.parametrize("ignore_background", [True, False])
def test_miou_matches_bruteforce(ignore_background):
    rng = _rng(3)
    t = rng.integers(0, 6, size=(3, 2, 5, 5))
    p = rng.integers(0, 4, size=(3, 2, 5, 5))  # fewer segments than objects: some stay unmatched
    t[2][t[2] == 5] = 4  # an id missing from one video only
    got = metrics.miou(t, p, ignore_background=ignore_background)
    want = [_miou_ref(t[b], p[b], ignore_background) for b in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_miou_perfect_and_empty():
    t = _rng(4).integers(0, 4, size=(2, 8, 8))
    np.testing.assert_allclose(metrics.miou(t, (t + 3) * 7), [1.0, 1.0])
    assert np.isnan(metrics.miou(np.zeros((1, 4), int), np.zeros((1, 4), int))[0])
    # one object split in two halves by the prediction: IoU 0.5
    t = np.array([[0, 0, 1, 1, 1, 1]])
    p = np.array([[0, 0, 1, 1, 2, 2]])
    np.testing.assert_allclose(metrics.miou(t, p), [0.5])


def test_match_slots_to_objects():
    rng = _rng(5)
    B, T, K, Hh, W = 2, 2, 5, 6, 6
    true = rng.integers(0, 4, size=(B, T, Hh, W))
    true[1][true[1] == 2] = 1  # object 2 absent in video 1
    slot_of = np.array([[3, 0, 4, 1], [2, 4, 0, 3]])  # id -> slot per video
    hard = np.take_along_axis(slot_of[:, None, None, None, :].repeat(T, 1), true[..., None], -1)[..., 0]
    masks = np.moveaxis(np.eye(K)[hard], -1, 2)  # (B, T, K, H, W) one-hot
    masks = masks + 0.1 * rng.random(masks.shape)  # soft, argmax unchanged
    got = metrics.match_slots_to_objects(torch.as_tensor(masks), true)
    assert got.shape == (B, 4)
    np.testing.assert_array_equal(got[0], [-1, 0, 4, 1])
    np.testing.assert_array_equal(got[1], [-1, 4, -1, 3])
    got = metrics.match_slots_to_objects(masks[:, 0], true[:, 0], num_ids=6, ignore_background=False)
    np.testing.assert_array_equal(got[0], [3, 0, 4, 1, -1, -1])
    with pytest.raises(ValueError, match="slot_masks"):
        metrics.match_slots_to_objects(masks, true[:, 0])


def test_topk_and_grid_l1():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9], [0.9, 0.1, 0.0, 0.2], [0.0, 0.1, 0.3, 0.2]])
    labels = np.array([3, 1, 0])
    acc = metrics.topk_accuracy(logits, labels, k=(1, 2, 5))
    assert acc == pytest.approx({"top1": 1 / 3, "top2": 1 / 3, "top5": 1.0})
    rng = _rng(6)
    lg, y = rng.normal(size=(50, 10)), rng.integers(0, 10, 50)
    want = np.mean([y[i] in np.argsort(-lg[i])[:3] for i in range(50)])
    assert metrics.topk_accuracy(lg, y, k=3)["top3"] == pytest.approx(want)
    # classes 0 = (0,0), 7 = (1,1), 35 = (5,5)
    assert metrics.grid_l1(np.array([0, 7, 35]), np.array([7, 7, 0])) == pytest.approx((2 + 0 + 10) / 3)
    onehot = np.eye(36)[[0, 7, 35]]
    assert metrics.grid_l1(onehot, np.array([7, 7, 0])) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="labels"):
        metrics.topk_accuracy(lg, y[:5])
    with pytest.raises(ValueError, match="logits_or_pred"):
        metrics.grid_l1(lg, y)


def test_per_step_mse():
    rng = _rng(7)
    p, t = rng.normal(size=(3, 4, 2, 5)), rng.normal(size=(3, 4, 2, 5))
    got = metrics.per_step_mse(torch.as_tensor(p), t)
    np.testing.assert_allclose(got, ((p - t) ** 2).mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(metrics.per_step_mse(p, t, time_dim=-1), ((p - t) ** 2).mean(axis=(0, 1, 2)))
    with pytest.raises(ValueError, match="target"):
        metrics.per_step_mse(p, t[:, :3])


def test_r2_score_matches_sklearn():
    rng = _rng(8)
    y, p = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    assert metrics.r2_score(y, p) == pytest.approx(sk_r2(y, p))
    assert metrics.r2_score(y[:, 0], y[:, 0]) == 1.0


def test_linear_probe_accuracy():
    rng = _rng(9)
    x = rng.normal(size=(300, 6))
    w = rng.normal(size=(6, 3))
    y = (x @ w).argmax(1)
    acc = metrics.linear_probe_accuracy(x, y)
    assert acc > 0.9
    assert acc == metrics.linear_probe_accuracy(x, y)  # deterministic
    chance = metrics.linear_probe_accuracy(x, rng.integers(0, 3, 300))
    assert chance < 0.55
    # fit_rows: fit the first rows, score the rest; a rule that changes after row 200 is not learned from before it
    shifted = np.where(np.arange(300) < 200, y, (y + 1) % 3)
    assert metrics.linear_probe_accuracy(x, shifted, fit_rows=200) < 0.1
    assert metrics.linear_probe_accuracy(x, y, fit_rows=200) > 0.9
    with pytest.raises(ValueError, match="fit_rows"):
        metrics.linear_probe_accuracy(x, y, fit_rows=300)


def test_mlp_probe_r2():
    rng = _rng(10)
    x = rng.uniform(-2, 2, size=(400, 3))
    y = np.stack([x[:, 0] ** 2, np.sin(2 * x[:, 1])], 1)  # nonlinear: a linear probe would fail on column 0
    r2 = metrics.mlp_probe_r2(x, y, steps=150)
    assert r2 > 0.9
    assert r2 == metrics.mlp_probe_r2(x, y, steps=150)
    assert metrics.mlp_probe_r2(x, rng.normal(size=400), steps=100) < 0.1
