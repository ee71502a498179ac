"""Ways back after an interruption: before the first checkpoint, from the older checkpoint when the newest is
corrupt, after a NaN stop with a changed learning rate, resuming a finished run, a real kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import toytask

from slotssm.train.checkpoint import DIVERGED_FILE, verify_checkpoint
from slotssm.train.config import apply_overrides
from slotssm.train.evaluation import write_eval_json
from slotssm.train.metrics_log import read_metrics
from slotssm.train.trainer import TrainingDivergedError, train


def make_config(*overrides):
    return apply_overrides(toytask.ToyTask.default_config("tiny", "mlp"), ["train.device=cpu", *overrides])


def run(cfg, out, **kwargs):
    return train(cfg, out, data_dir=out.parent / "data", progress=False, **kwargs)


def weights(run_dir):
    return safetensors.torch.load_file(str(run_dir / "ckpt-latest" / "model.safetensors"))


def same(a, b):
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_resume_before_the_first_checkpoint_restarts_cleanly(tmp_path, monkeypatch, capsys):
    cfg = make_config("train.steps=8", "train.ckpt_every=6", "train.log_every=2")
    run(cfg, tmp_path / "straight")
    monkeypatch.setattr(toytask.ToyTask, "crash_at_call", 5)  # after two log lines, before the first checkpoint
    with pytest.raises(toytask.SimulatedCrash):
        run(cfg, tmp_path / "killed")
    assert not (tmp_path / "killed" / "ckpt-latest").exists()
    monkeypatch.setattr(toytask.ToyTask, "crash_at_call", 0)
    run(cfg, tmp_path / "killed", resume=True)
    assert "no checkpoint yet; restarting from step 0" in capsys.readouterr().err
    assert same(weights(tmp_path / "straight"), weights(tmp_path / "killed"))
    steps = [(r["step"], r["split"]) for r in read_metrics(tmp_path / "killed" / "metrics.jsonl")]
    assert steps == [(r["step"], r["split"]) for r in read_metrics(tmp_path / "straight" / "metrics.jsonl")]


def test_corrupt_newest_checkpoint_falls_back_to_the_older_one(tmp_path, capsys):
    cfg = make_config("train.steps=12", "train.ckpt_every=4")
    run(cfg, tmp_path / "straight")
    run(apply_overrides(cfg, ["train.steps=8"]), tmp_path / "run")
    assert verify_checkpoint(tmp_path / "run" / "ckpt-prev")["step"] == 4
    model = tmp_path / "run" / "ckpt-latest" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-7])
    capsys.readouterr()
    run(cfg, tmp_path / "run", resume=True)  # from step 4, not from scratch, not refused
    err = capsys.readouterr().err
    assert "ckpt-latest/model.safetensors" in err and "older checkpoint" in err and "(step 4)" in err
    assert same(weights(tmp_path / "straight"), weights(tmp_path / "run"))


def test_after_a_nan_stop_resume_needs_and_takes_a_changed_lr(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    cfg = make_config("train.steps=12", "train.ckpt_every=4")
    monkeypatch.setattr(toytask.ToyTask, "nan_at_call", 7)
    with pytest.raises(TrainingDivergedError):
        run(cfg, out)
    assert json.loads((out / DIVERGED_FILE).read_text())["step"] == 7
    monkeypatch.setattr(toytask.ToyTask, "nan_at_call", 0)
    with pytest.raises(ValueError, match=r"unchanged.*step 7.*train.optim.lr"):
        run(cfg, out, resume=True)
    with pytest.raises(ValueError, match="model.hidden"):  # a change that alters the model is still refused
        run(apply_overrides(cfg, ["train.optim.lr=5e-3", "model.hidden=8"]), out, resume=True)
    capsys.readouterr()
    metrics = run(apply_overrides(cfg, ["train.optim.lr=5e-3"]), out, resume=True)
    assert metrics["step"] == 12 and not (out / DIVERGED_FILE).exists()
    assert "train.optim.lr: 0.01 -> 0.005" in capsys.readouterr().err
    lrs = [r["lr"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train" and r["step"] > 4]
    assert lrs and max(lrs) <= 0.005 + 1e-12  # the new schedule (at most 0.005, not 0.01) after the resume
    assert json.loads((out / "config.json").read_text())["config"]["train"]["optim"]["lr"] == 0.005


def test_resuming_a_finished_run_adds_no_validation_line(tmp_path):
    out = tmp_path / "run"
    cfg = make_config("train.steps=4", "train.ckpt_every=2")
    run(cfg, out)
    before = read_metrics(out / "metrics.jsonl")
    run(cfg, out, resume=True)
    after = read_metrics(out / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in after] == [(r["step"], r["split"]) for r in before]
    assert json.loads((out / "eval.json").read_text())["step"] == 4


def test_eval_json_is_valid_json_with_nan_as_null(tmp_path):
    path = write_eval_json(tmp_path, step=3, split="val", metrics={"mse": float("nan"), "ari": 0.5,
                                                                     "top1": float("inf")})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["metrics"] == {"mse": None, "ari": 0.5, "top1": None}


WORKER = """
import sys, toytask
from slotssm.train.config import apply_overrides
from slotssm.train.trainer import train
cfg = apply_overrides(toytask.ToyTask.default_config("tiny", "mlp"), ["train.device=cpu"] + sys.argv[4:])
train(cfg, sys.argv[1], data_dir=sys.argv[2], progress=False, resume=sys.argv[3] == "resume")
"""


def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(tmp_path):
    """A real SIGKILL of a training process (no cleanup runs), then --resume: the same weights as a straight run."""
    sets = ["train.steps=300", "train.ckpt_every=3", "train.log_every=5", "train.eval_every=0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    # The straight run in a process of its own too: the same thread count, the same floating-point reductions.
    subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "straight"), str(tmp_path / "data"), "fresh", *sets],
                   env=env, check=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(out), str(tmp_path / "data"), "fresh", *sets], env=env)
    deadline = time.time() + 60
    while not (out / "ckpt-latest").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in the middle of training, maybe during a checkpoint write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed: make it longer"
    subprocess.run([sys.executable, "-c", WORKER, str(out), str(tmp_path / "data"), "resume", *sets], env=env,
                   check=True)
    assert same(weights(tmp_path / "straight"), weights(out))
