"""snitch: label from the final position, containment hides the snitch and carries it, frame protocols."""

import numpy as np
import pytest

from slotssm.data import generate, grid_label, sample_frames_eval, sample_frames_train


@pytest.fixture(scope="module")
def videos():
    return generate("snitch", 12, seed=0, num_frames=90, image_size=48, slot_length=10)


def test_label_is_the_quantised_final_position(videos):
    pos = videos["snitch_positions"][:, -1]  # (n, 2)
    col, row = np.floor(6 * pos[:, 0] / 48), np.floor(6 * pos[:, 1] / 48)
    assert (videos["label"] == 6 * row + col).all()
    assert (videos["label"] == grid_label(pos, 48)).all()
    assert grid_label(np.array([[47.99, 0.0], [0.0, 47.99], [48.0, 48.0]]), 48).tolist() == [5, 30, 35]


def test_covered_snitch_is_invisible_and_rides_with_its_cone(videos):
    vis, cont = videos["snitch_visible"], videos["snitch_contained"]
    assert cont.any(axis=1).mean() >= 0.5  # containment actually happens
    assert not (vis & cont).any()
    assert vis[:, 0].all()  # uncovered at the start
    pos, snitch = videos["positions"], videos["snitch_positions"]
    cones = videos["object_type"] == 1  # (n, K)
    for v, t in zip(*np.nonzero(cont)):
        gap = np.linalg.norm(pos[v, t] - snitch[v, t], axis=-1)[cones[v]]
        assert gap.min() < 1e-9  # exactly under some cone
    moved = np.linalg.norm(np.diff(snitch, axis=1), axis=-1) > 0  # (n, T-1)
    assert (moved & cont[:, 1:] & cont[:, :-1]).any()  # carried while hidden


def test_label_is_not_just_the_last_seen_cell(videos):
    vis, snitch = videos["snitch_visible"], videos["snitch_positions"]
    last = np.array([np.flatnonzero(v)[-1] for v in vis])
    seen = grid_label(snitch[np.arange(len(vis)), last], 48)
    assert (seen != videos["label"]).mean() >= 0.2


def test_objects_and_types(videos):
    types, num = videos["object_type"], videos["num_objects"]
    assert (types[:, 0] == 0).all() and ((types == 1).sum(1) >= 2).all()
    assert ((num >= 5) & (num <= 10)).all() and ((types >= 0).sum(1) == num).all()
    assert videos["video"].shape == (12, 90, 48, 48, 3)


def test_frame_sampling_protocols():
    rng = np.random.default_rng(0)
    train = sample_frames_train(300, rng)
    assert train.shape == (50,) and (train // 6 == np.arange(50)).all()
    assert not np.array_equal(train, sample_frames_train(300, rng))  # random within segments
    evaluation = sample_frames_eval(300)
    assert evaluation.tolist() == list(range(0, 300, 6))
    assert sample_frames_eval(300, stride=6).shape == (50,)
    with pytest.raises(ValueError, match="segments"):
        sample_frames_train(10, rng, segments=50)


def test_crowded_first_frame_drops_distractors_not_the_video():
    """Nine or ten objects with large distractors (radius 0.2 of the frame) do not fit apart: the generator drops
    distractors (never the snitch or a cone) until they do, instead of failing the whole dataset."""
    from slotssm.data.snitch import DEFAULTS, generate_snitch

    p = dict(DEFAULTS, num_frames=6, image_size=20, slot_length=3, num_objects=(9, 10), num_cones=(2, 3),
             object_sizes=(0.2,))
    out = generate_snitch([np.random.default_rng([3, i]) for i in range(8)], p)
    otype, n = out["object_type"], out["num_objects"]
    assert (n < 9).any()  # drawn 9-10: these videos lost distractors
    assert ((otype == 0).sum(1) == 1).all() and ((otype == 1).sum(1) >= 2).all()  # snitch and cones kept
    assert ((otype >= 0) == (np.arange(otype.shape[1]) < n[:, None])).all()  # the dropped ones are absent


def test_generation_is_unchanged_where_objects_fit():
    """The crowding fallback touches only videos that used to fail: a small dataset is bit-identical to the one
    generated before it (hash of every key)."""
    import hashlib

    from slotssm.data.snitch import DEFAULTS, generate_snitch

    out = generate_snitch([np.random.default_rng([7, i]) for i in range(6)],
                          dict(DEFAULTS, num_frames=12, image_size=32, slot_length=4))
    h = hashlib.sha256()
    for k in sorted(out):
        h.update(k.encode())
        h.update(np.ascontiguousarray(out[k]).tobytes())
    assert h.hexdigest()[:16] == "8a99fefcaf4ced08"
