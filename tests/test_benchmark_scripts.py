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
