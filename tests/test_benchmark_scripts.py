"""The diagnostic scripts under benchmarks/ run end to end on a tiny run, and their probe can tell signal from none."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from slotssm.cli import main

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_colour_memory_probe_separates_signal_from_noise():
    mod = _load("colour_memory")
    rng = np.random.default_rng(0)
    y = rng.integers(2, 7, size=300)
    signal = np.eye(7)[y] + 0.1 * rng.standard_normal((300, 7))  # the colour, one-hot, with a little noise
    noise = rng.standard_normal((300, 7))
    assert mod.probe_accuracy(signal[:200], y[:200], signal[200:], y[200:], 1e-3) > 0.95
    assert mod.probe_accuracy(noise[:200], y[:200], noise[200:], y[200:], 1e-3) < 0.45


def test_colour_memory_script_on_a_tiny_one_ball_run(tmp_path, capsys):
    run = tmp_path / "run"
    sets = ["data.num_objects=1", "data.num_train=8", "data.num_val=4", "train.steps=1", "train.health=false"]
    assert main(["train", "blinking_balls", "--model", "slotssm", "--preset", "tiny", "--out", str(run),
                 "--data-dir", str(tmp_path / "data"), "--no-progress"] + [a for s in sets for a in ("--set", s)]) == 0
    capsys.readouterr()
    _load("colour_memory").main([str(run), "--fit", "8", "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "8 videos fitted, 4 scored" in out and "slots at the end of frame 2" in out
    run4 = tmp_path / "run4"  # the tiny preset's several balls: refused by the script, not by the training
    assert main(["train", "blinking_balls", "--model", "slotssm", "--preset", "tiny", "--out", str(run4),
                 "--data-dir", str(tmp_path / "data"), "--no-progress", "--set", "train.steps=1",
                 "--set", "train.health=false"]) == 0
    with pytest.raises(SystemExit, match="num_objects=1"):
        _load("colour_memory").main([str(run4), "--data-dir", str(tmp_path / "data")])


def test_snitch_pixels_paints_the_snitch_over_with_its_background():
    import torch

    from slotssm.data.snitch import GOLD

    mod = _load("snitch_pixels")
    raw = torch.full((1, 8, 8, 3), 80, dtype=torch.uint8)
    raw[0, 3, 4] = torch.as_tensor(GOLD, dtype=torch.uint8)
    gold = mod.gold_pixels(raw)
    assert gold.sum() == 1 and gold[0, 3, 4]
    frames = raw.permute(0, 3, 1, 2).float() / 255
    filled = mod.snitch_painted_over(frames, gold)
    assert torch.allclose(filled, torch.full_like(frames, 80 / 255))  # the snitch's pixel takes the background's colour


def test_snitch_pixels_script_on_a_tiny_pretraining(tmp_path, capsys):
    run = tmp_path / "run"
    sets = ["data.objective=reconstruct", "train.steps=1", "train.health=false"]
    assert main(["train", "snitch_localization", "--model", "oc_slotssm", "--preset", "tiny", "--out", str(run),
                 "--data-dir", str(tmp_path / "data"), "--no-progress"] + [a for s in sets for a in ("--set", s)]) == 0
    capsys.readouterr()
    _load("snitch_pixels").main([str(run), "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "held-out frames, snitch in view" in out and "the snitch painted over" in out
    assert "of that slot's mask" in out
    classify = tmp_path / "classify"
    assert main(["train", "snitch_localization", "--model", "oc_slotssm", "--preset", "tiny", "--out", str(classify),
                 "--data-dir", str(tmp_path / "data"), "--no-progress", "--set", "train.steps=1",
                 "--set", "train.health=false"]) == 0
    with pytest.raises(SystemExit, match="objective=reconstruct"):
        _load("snitch_pixels").main([str(classify), "--data-dir", str(tmp_path / "data")])


def _tiny_run(tmp_path, task, model, *sets):
    run = tmp_path / f"{task}-{model}"
    sets = ["train.steps=1", "train.health=false", *sets]
    assert main(["train", task, "--model", model, "--preset", "tiny", "--out", str(run), "--data-dir",
                 str(tmp_path / "data"), "--no-progress"] + [a for s in sets for a in ("--set", s)]) == 0
    return run


def test_colour_rule_last_colours_and_script(tmp_path, capsys):
    mod = _load("colour_rule")
    picked_ball = np.array([[0, 1, 0], [2, 2, 2]])
    picked_color = np.array([[3, 4, 5], [6, 2, 3]])
    np.testing.assert_array_equal(mod.last_colours(picked_ball, picked_color, 3), [[5, 4, 1], [1, 1, 3]])
    run = _tiny_run(tmp_path, "blinking_balls", "slotssm")
    capsys.readouterr()
    mod.main([str(run), "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "the rule's colour" in out and "the last colour shown" in out and "by the frame of the blink" in out
    with pytest.raises(SystemExit, match="blinking_balls"):
        mod.main([str(_tiny_run(tmp_path, "object_centric", "oc_slotssm")), "--data-dir", str(tmp_path / "data")])


def test_object_slots_counts_objects_left_in_the_background_and_merged():
    mod = _load("object_slots")
    true = np.zeros((1, 6, 6), dtype=np.int64)
    true[0, 0, :2], true[0, 3, :2], true[0, 5, 4:] = 1, 2, 3  # three objects of 2 pixels
    pred = np.zeros_like(true)  # slot 0: the background, and object 3 with it
    pred[0, 0, :2] = pred[0, 3, :2] = 1  # slot 1 holds objects 1 and 2
    rows, video = mod.video_rows(true, pred, min_pixels=2)
    assert [bg for _, bg, _ in rows] == [False, False, True] and [n for _, _, n in rows] == [2, 2, 2]
    assert video == (3, 2, 1, 1, 1)  # 3 objects, 2 slots used, 1 background slot, 1 object in it, 1 merged slot


def test_object_slots_and_mask_resolution_scripts(tmp_path, capsys):
    run = _tiny_run(tmp_path, "object_centric", "oc_slotssm")
    capsys.readouterr()
    _load("object_slots").main([str(run), "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "FG-ARI" in out and "left in a background slot" in out and "pixels per frame" in out
    mod = _load("mask_resolution")
    seg = np.zeros((1, 1, 16, 16), dtype=np.int64)
    seg[..., 4:12, 4:12] = 1  # a square on whole 2x2 cells survives a 8x8 map; a 1-pixel object does not
    seg[..., 0, 15] = 2
    import torch

    coarse = mod.coarse_masks(torch.from_numpy(seg), 8).numpy()
    assert (coarse[..., 4:12, 4:12] == 1).all() and coarse[..., 0, 15] != 2
    np.testing.assert_array_equal(mod.coarse_masks(torch.from_numpy(seg), 16).numpy(), seg)
    mod.main(["--preset", "tiny", "--sides", "8", "16", "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert "through a 8x8 map" in out and "through a 16x16 map: FG-ARI 1.000" in out
    cover = float(out.split("objects cover ")[1].split()[0])
    mod.main(["--preset", "tiny", "--sides", "16", "--data-dir", str(tmp_path / "data"),
              "--set", "data.object_sizes=[0.3]"])  # larger objects than the preset's: more of the pixels
    out = capsys.readouterr().out
    assert "data.object_sizes=[0.3]" in out and float(out.split("objects cover ")[1].split()[0]) > cover


def test_rollout_events_finds_contacts_and_runs_on_a_tiny_run(tmp_path, capsys):
    mod = _load("rollout_events")
    # two balls of radius 2 in a 20-pixel frame: apart at frame 0, touching at frame 1; one at the wall at frame 2
    pos = np.array([[[[5.0, 10.0], [15.0, 10.0]], [[8.0, 10.0], [12.0, 10.0]], [[1.5, 10.0], [15.0, 10.0]]]])
    pair, wall = mod.contacts(pos, np.array([[2.0, 2.0]]), 20, margin=0.1)
    np.testing.assert_array_equal(pair, [[False, True, False]])
    np.testing.assert_array_equal(wall, [[False, False, True]])
    run = _tiny_run(tmp_path, "video_prediction", "slotssm")
    capsys.readouterr()
    mod.main([str(run), "--data-dir", str(tmp_path / "data"), "--videos", "8"])
    out = capsys.readouterr().out
    assert "8 held-out videos" in out and "| all | 8 |" in out and "predicted brightness" in out
    with pytest.raises(SystemExit, match="--videos"):
        mod.main([str(run), "--videos", "0"])
