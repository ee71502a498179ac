"""Blinking Color Balls: target rules on hand-made logs and against a loop reference, rendering (its patch
sequence: tests/test_patches.py)."""

import numpy as np
import pytest

from slotssm.data import PALETTE, generate, target_colors_from_log
from slotssm.data.blinking_balls import rgb_to_classes

WHITE = 1


def reference(balls, colors, k, rule):
    """Plain-Python statement of the two rules, one log at a time."""
    out = []
    for ball in range(k):
        given = [c for b, c in zip(balls, colors) if b == ball]
        if not given:
            out.append(WHITE)
        elif rule == "earliest":
            out.append(given[0])
        else:
            counts = {c: given.count(c) for c in given}
            best = max(counts.values())
            out.append(next(c for c in given if counts[c] == best))  # first-given among the tied
    return out


# (picked_ball, picked_color, num_balls, earliest, most_frequent), written out by hand.
LOGS = [
    # Ball 0 gets 2, 3, 3: earliest 2, most frequent 3. Ball 1 never picked: white. Ball 2 gets 4 once.
    ([0, 0, 2, 0], [2, 3, 4, 3], 3, [2, 1, 4], [3, 1, 4]),
    # Tie: ball 0 gets 5, 2, 2, 5 -> counts 2 and 2, 5 was given first -> 5 for both rules.
    ([0, 0, 0, 0], [5, 2, 2, 5], 2, [5, 1], [5, 1]),
    # Tie of three singletons for ball 1 (6, 4, 3): the first one, 6. Ball 0 gets 2 twice.
    ([1, 0, 1, 0, 1], [6, 2, 4, 2, 3], 2, [2, 6], [2, 6]),
    # Later colour overtakes: ball 0 gets 3 then 4, 4 -> earliest 3, most frequent 4.
    ([0, 0, 0], [3, 4, 4], 1, [3], [4]),
]


@pytest.mark.parametrize("balls, colors, k, earliest, frequent", LOGS)
def test_rules_on_hand_made_logs(balls, colors, k, earliest, frequent):
    b, c = np.array([balls]), np.array([colors])
    assert target_colors_from_log(b, c, k, "earliest")[0].tolist() == earliest
    assert target_colors_from_log(b, c, k, "most_frequent")[0].tolist() == frequent
    assert reference(balls, colors, k, "earliest") == earliest
    assert reference(balls, colors, k, "most_frequent") == frequent


@pytest.mark.parametrize("rule", ["earliest", "most_frequent"])
def test_rules_match_the_reference_on_random_logs(rule):
    rng = np.random.default_rng(0)
    balls = rng.integers(0, 4, size=(200, 9))  # short logs: ties and never-picked balls are common
    colors = rng.integers(2, 7, size=(200, 9))
    got = target_colors_from_log(balls, colors, 4, rule)
    want = [reference(b, c, 4, rule) for b, c in zip(balls.tolist(), colors.tolist())]
    assert got.tolist() == want


@pytest.fixture(scope="module", params=["earliest", "most_frequent"])
def data(request):
    return generate("blinking_balls", 4, seed=1, num_frames=6, image_size=32, patch=8, num_objects=3,
                    rule=request.param), request.param


def _at_centres(images, positions):
    """images (n, F, H, W[, 3]) sampled at positions (n, F, K, 2) -> (n, F, K[, 3])."""
    n, f, k, _ = positions.shape
    col, row = np.floor(positions[..., 0]).astype(int), np.floor(positions[..., 1]).astype(int)
    vi, ti = np.meshgrid(np.arange(n), np.arange(f), indexing="ij")
    return images[vi[..., None], ti[..., None], row, col]


def test_log_and_target_agree(data):
    out, rule = data
    want = target_colors_from_log(out["picked_ball"], out["picked_color"], 3, rule)
    assert (out["target_colors"] == want).all()
    assert out["picked_color"].min() >= 2 and out["picked_color"].max() <= 6
    # Target pixels at each ball's centre carry its target colour (class and RGB).
    t = out["frames"].shape[1]
    centres = out["positions"][:, t : t + 1]  # (n, 1, K, 2)
    assert (_at_centres(out["target_classes"][:, None], centres)[:, 0] == out["target_colors"]).all()
    assert (_at_centres(out["target"][:, None], centres)[:, 0] == PALETTE[out["target_colors"]]).all()


def test_context_frames_show_one_coloured_ball(data):
    out, _ = data
    t = out["frames"].shape[1]
    classes = rgb_to_classes(out["frames"])  # lossless: every pixel is a palette colour
    at = _at_centres(classes, out["positions"][:, :t])  # (n, T, K)
    n, _, k = at.shape
    expect = np.ones_like(at)
    expect[np.arange(n)[:, None], np.arange(t), out["picked_ball"]] = out["picked_color"]
    assert (at == expect).all()
    assert (out["palette"] == PALETTE).all() and (out["target"] == PALETTE[out["target_classes"]]).all()
