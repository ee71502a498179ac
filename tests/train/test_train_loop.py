"""The trainer on the toy task: learning, logs, exact resume, corrupted checkpoints, NaN handling."""

import json
import os

import pytest
import safetensors.torch
import toytask

from slotssm.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    find_checkpoint,
    load_model_from_run,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from slotssm.train.config import apply_overrides
from slotssm.train.metrics_log import read_metrics
from slotssm.train.trainer import TrainingDivergedError, train


def make_config(*overrides):
    return apply_overrides(toytask.ToyTask.default_config("tiny", "mlp"), ["train.device=cpu", *overrides])


def run(cfg, out, **kwargs):
    return train(cfg, out, data_dir=out.parent / "data", progress=False, **kwargs)


def load_weights(run_dir):
    return safetensors.torch.load_file(str(run_dir / "ckpt-latest" / "model.safetensors"))


def test_loss_goes_down_and_logs_are_written(tmp_path):
    out = tmp_path / "run"
    metrics = run(make_config("train.steps=40", "train.eval_every=20"), out)
    assert metrics["step"] == 40 and set(metrics) >= {"mse", "train_loss"}
    records = read_metrics(out / "metrics.jsonl")
    train_rows = [r for r in records if r["split"] == "train"]
    val_rows = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in train_rows] == list(range(5, 45, 5))
    assert train_rows[-1]["loss"] < 0.5 * train_rows[0]["loss"]
    assert set(train_rows[0]) >= {"step", "loss", "lr", "grad_norm", "it/s", "mse"}
    assert [r["step"] for r in val_rows] == [20, 40]  # one in the middle, one at the end
    assert val_rows[-1]["mse"] == pytest.approx(metrics["mse"])
    assert json.loads((out / "eval.json").read_text())["metrics"]["mse"] == pytest.approx(metrics["mse"])
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "tb"))
    assert json.loads((out / "config.json").read_text())["config"]["train"]["steps"] == 40
    assert sorted(p.name for p in (out / "ckpt-latest").iterdir()) == [
        "checkpoint.json",
        "model.safetensors",
        "trainer_state.pt",
    ]
    assert not list(out.glob(".ckpt-tmp-*"))
    assert verify_checkpoint(out / "ckpt-prev")["step"] == 30  # the last two checkpoints are kept
    task, model, config = load_model_from_run(out, "cpu")
    assert config.train.steps == 40 and not model.training
    assert toytask.weights_digest(model) == toytask.weights_digest(toytask.ToyTask.last_model)
    assert load_model_from_run(out, "cpu", task=config.task)[2].task == config.task
    with pytest.raises(ValueError, match=f"expected a object_centric run, got a {config.task} run"):
        load_model_from_run(out, "cpu", task="object_centric")


def test_resume_after_a_crash_is_bit_identical(tmp_path, monkeypatch):
    cfg = make_config("train.steps=20", "train.ckpt_every=6", "train.log_every=3", "train.eval_every=4")
    run(cfg, tmp_path / "straight")

    monkeypatch.setattr(toytask.ToyTask, "crash_at_call", 15)
    with pytest.raises(toytask.SimulatedCrash):
        run(cfg, tmp_path / "resumed")
    assert verify_checkpoint(find_checkpoint(tmp_path / "resumed"))["step"] == 12
    with pytest.raises(ValueError, match="already holds a run"):
        run(cfg, tmp_path / "resumed")
    monkeypatch.setattr(toytask.ToyTask, "crash_at_call", 0)
    run(cfg, tmp_path / "resumed", resume=True)

    a, b = load_weights(tmp_path / "straight"), load_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    rows_a = [(r["step"], r["split"], r.get("loss"), r["mse"]) for r in read_metrics(tmp_path / "straight/metrics.jsonl")]
    rows_b = [(r["step"], r["split"], r.get("loss"), r["mse"]) for r in read_metrics(tmp_path / "resumed/metrics.jsonl")]
    assert rows_a == rows_b  # the same log, rows after the checkpoint not duplicated

    # Evaluating (which here draws random numbers) leaves the training trajectory alone.
    run(apply_overrides(cfg, ["train.eval_every=0"]), tmp_path / "no-eval")
    c = load_weights(tmp_path / "no-eval")
    assert all(a[k].equal(c[k]) for k in a)


def test_resume_refuses_a_changed_config_and_a_missing_checkpoint(tmp_path):
    cfg = make_config("train.steps=4", "train.ckpt_every=2")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(cfg, tmp_path / "none", resume=True)
    run(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="model.hidden"):
        run(apply_overrides(cfg, ["model.hidden=8"]), tmp_path / "run", resume=True)
    metrics = run(apply_overrides(cfg, ["train.steps=6"]), tmp_path / "run", resume=True)  # longer is fine
    assert metrics["step"] == 6


def test_corrupted_checkpoint_is_refused(tmp_path):
    out = tmp_path / "run"
    cfg = make_config("train.steps=4", "train.ckpt_every=2")
    run(cfg, out)
    ckpt = out / "ckpt-latest"
    original = (ckpt / "model.safetensors").read_bytes()

    flipped = bytearray(original)
    flipped[-3] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="model.safetensors: sha256 mismatch"):
        load_model_from_run(out, "cpu")
    prev = (out / "ckpt-prev" / "model.safetensors").read_bytes()
    (out / "ckpt-prev" / "model.safetensors").write_bytes(prev[:-5])  # both kept checkpoints damaged: refused
    with pytest.raises(CheckpointError, match="ckpt-latest/model.safetensors.*ckpt-prev/model.safetensors"):
        run(apply_overrides(cfg, ["train.steps=6"]), out, resume=True)
    (out / "ckpt-prev" / "model.safetensors").write_bytes(prev)

    (ckpt / "model.safetensors").write_bytes(original)
    state = (ckpt / "trainer_state.pt").read_bytes()
    (ckpt / "trainer_state.pt").write_bytes(state[: len(state) // 2])
    with pytest.raises(CheckpointError, match="trainer_state.pt: truncated"):
        verify_checkpoint(ckpt)

    # A damaged file whose recorded hash was rewritten to match: the reader itself must refuse it.
    (ckpt / "trainer_state.pt").write_bytes(state)
    (ckpt / "model.safetensors").write_bytes(b"\xff" * 64)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["files"]["model.safetensors"] = {"bytes": 64, "sha256": __import__("hashlib").sha256(b"\xff" * 64).hexdigest()}
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable safetensors"):
        load_model_from_run(out, "cpu")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(toytask.ToyTask, "nan_at_call", 13)
    with pytest.raises(TrainingDivergedError) as info:
        run(make_config("train.steps=20", "train.ckpt_every=5"), out)
    msg = str(info.value)
    assert "the loss is nan at step 13" in msg and "ckpt-latest (step 10)" in msg
    assert verify_checkpoint(out / "ckpt-latest")["step"] == 10
    assert not (out / "eval.json").exists()
    assert max(r["step"] for r in read_metrics(out / "metrics.jsonl")) == 10


def test_checkpoint_swap_and_rng_round_trip(tmp_path):
    model = toytask.ToyModel(toytask.ToyModelConfig(), 3)
    for step in (1, 2):
        save_checkpoint(tmp_path, model=model, trainer_state={"rng": [capture_rng_state()]}, step=step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-latest", "ckpt-prev"]  # the last two
    import shutil

    shutil.rmtree(tmp_path / "ckpt-prev")
    (tmp_path / "ckpt-latest").rename(tmp_path / "ckpt-prev")  # as if a crash came between the two renames
    assert find_checkpoint(tmp_path) == tmp_path / "ckpt-prev"
    save_checkpoint(tmp_path, model=model, trainer_state={}, step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-latest", "ckpt-prev"]
    assert [verify_checkpoint(tmp_path / n)["step"] for n in ("ckpt-latest", "ckpt-prev")] == [3, 2]

    import random

    import numpy as np
    import torch

    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert first[0].equal(second[0]) and (first[1] == second[1]).all() and first[2] == second[2]
