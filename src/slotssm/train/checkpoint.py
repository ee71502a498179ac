"""Checkpoints: written whole or not at all, verified before use.

A checkpoint is a directory `RUN_DIR/ckpt-latest` holding

    model.safetensors    the model's weights (safetensors: no pickle, loadable by other tools)
    trainer_state.pt     step, optimizer, scheduler, grad scaler, every rank's RNG states and the data position;
                         plain tensors, numbers and lists only, so `torch.load(..., weights_only=True)` reads it
    checkpoint.json      step, time, metrics, and each file's size and sha256

It is written into a temporary directory that is then renamed into place. The last two checkpoints are kept: the
previous one is renamed to `ckpt-prev` (replacing the one before it) just before the new one takes its place, so a
crash at any moment leaves at least one complete checkpoint (`find_checkpoint` falls back to `ckpt-prev`), and a
newest checkpoint corrupted later (disk, copy) leaves the older one to resume from (`find_valid_checkpoint`, which
says so). Loading checks every file against its recorded hash and refuses a corrupted or truncated checkpoint with
a `CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import safetensors.torch
from safetensors import SafetensorError
import torch
from torch import nn

LATEST, PREVIOUS, TMP_PREFIX = "ckpt-latest", "ckpt-prev", ".ckpt-tmp-"
DIVERGED_FILE = "diverged.json"  # written when a run stops on a NaN/Inf; read by the next --resume
MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "trainer_state.pt", "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, truncated, or does not fit the model."""


# ------------------------------------------------------------------------------------------------------ RNG state


def capture_rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states as tensors and numbers (safe for weights_only loading)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": py_gauss},
    }


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))


# -------------------------------------------------------------------------------------------------------- writing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir, *, model: nn.Module, trainer_state: dict, step: int, metrics: dict | None = None) -> Path:
    """Write a complete checkpoint of `model` and `trainer_state` as `run_dir/ckpt-latest`; returns its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(TMP_PREFIX + "*"):  # left behind by a crash while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=run_dir))
    try:
        safetensors.torch.save_model(model, str(tmp / MODEL_FILE), metadata={"step": str(step)})
        torch.save({**trainer_state, "step": step}, tmp / STATE_FILE)
        files = {}
        for name in (MODEL_FILE, STATE_FILE):
            _fsync(tmp / name)
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        meta = {"step": step, "time": time.time(), "metrics": metrics or {}, "files": files}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _fsync(tmp / META_FILE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest, previous = run_dir / LATEST, run_dir / PREVIOUS
    if (latest / META_FILE).is_file():  # the newest complete checkpoint becomes the previous one
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(latest, previous)
    else:  # only a crash between the renames leaves no latest: ckpt-prev is then the one to keep
        shutil.rmtree(latest, ignore_errors=True)
    os.rename(tmp, latest)
    _fsync(run_dir)
    return latest


# -------------------------------------------------------------------------------------------------------- reading


def find_checkpoint(run_dir) -> Path | None:
    """`ckpt-latest`, or `ckpt-prev` if a crash interrupted the swap, or None when the run has no checkpoint."""
    for name in (LATEST, PREVIOUS):
        if (Path(run_dir) / name / META_FILE).is_file():
            return Path(run_dir) / name
    return None


def find_valid_checkpoint(run_dir, warn=None) -> tuple[Path, dict] | None:
    """The newest checkpoint of `run_dir` that verifies, and its metadata; None when there is none at all.

    A corrupted newest checkpoint is reported through `warn(message)` and the older one is used; when every
    checkpoint is corrupted, the CheckpointError names each of them.
    """
    errors = []
    for name in (LATEST, PREVIOUS):
        ckpt = Path(run_dir) / name
        if not ckpt.exists():
            continue
        try:
            meta = verify_checkpoint(ckpt)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors and warn is not None:
            warn(f"{errors[0]}; resuming from the older checkpoint {ckpt} (step {meta['step']}) instead")
        return ckpt, meta
    if errors:
        raise CheckpointError("; ".join(errors) + ("" if len(errors) > 1 else " (no older checkpoint to fall back to)"))
    return None


def verify_checkpoint(ckpt_dir) -> dict:
    """Check every file of `ckpt_dir` against the sizes and hashes in checkpoint.json; returns that metadata."""
    ckpt_dir = Path(ckpt_dir)
    meta_path = ckpt_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({err})") from None
    for name in (MODEL_FILE, STATE_FILE):
        path = ckpt_dir / name
        if name not in files or not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint")
        size = path.stat().st_size
        if size != files[name]["bytes"]:
            raise CheckpointError(f"{path}: truncated or corrupted ({size} bytes, expected {files[name]['bytes']})")
        if _sha256(path) != files[name]["sha256"]:
            raise CheckpointError(f"{path}: sha256 mismatch, the file is corrupted")
    return meta


def load_model_weights(model: nn.Module, ckpt_dir, *, verify: bool = True) -> None:
    """Load `ckpt_dir/model.safetensors` into `model` (strict: every key must match)."""
    ckpt_dir = Path(ckpt_dir)
    if verify:
        verify_checkpoint(ckpt_dir)
    path = ckpt_dir / MODEL_FILE
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False, device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors file ({err})") from None
    except RuntimeError as err:  # load_state_dict: a tensor of the wrong shape
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"{path}: weights do not fit the model built from config.json: {detail}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model built from config.json: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def load_trainer_state(ckpt_dir) -> dict:
    """The optimizer/scheduler/RNG/data state of `ckpt_dir` (read with weights_only=True)."""
    path = Path(ckpt_dir) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable trainer state ({type(err).__name__}: {err})") from None


def write_divergence(run_dir, *, step: int, what: str, checkpoint_step: int | None) -> None:
    """Record where a run diverged, so that resuming it unchanged (which repeats the same steps) is refused."""
    record = {"step": step, "what": what, "checkpoint_step": checkpoint_step, "time": time.time()}
    (Path(run_dir) / DIVERGED_FILE).write_text(json.dumps(record) + "\n")


def read_divergence(run_dir) -> dict | None:
    path = Path(run_dir) / DIVERGED_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def clear_divergence(run_dir) -> None:
    (Path(run_dir) / DIVERGED_FILE).unlink(missing_ok=True)


def load_model_from_run(run_dir, device="cpu", *, data_dir=None, task: str | None = None):
    """(task, model, config) of a finished or running run: the model rebuilt from config.json, weights loaded.

    `data_dir` defaults to the one the run was trained with. The model is returned in eval mode on `device`.
    With `task`, a run of another task is a ValueError naming both.
    """
    from slotssm.tasks.registry import get_task
    from slotssm.train.config import load_run_config, read_config_file

    config = load_run_config(run_dir)
    if task is not None and config.task != task:
        raise ValueError(f"run: expected a {task} run, got a {config.task} run in {run_dir}")
    if data_dir is None:
        data_dir = read_config_file(run_dir).get("data_dir", "data")
    ckpt = find_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected {Path(run_dir) / LATEST})")
    task = get_task(config.task)(config, data_dir)
    model = task.build_model()
    load_model_weights(model, ckpt)
    return task, model.to(device).eval(), config


def init_from_run(model: nn.Module, config, data_dir=None) -> None:
    """Copy `config.train.init_modules` (top-level submodules, e.g. "encoder", "seq") of the model of the run
    directory `config.train.init_from` into `model`: pre-training, then fine-tuning with another head.

    The sequence model's config must be the same in both runs; a module the source lacks is an error.
    """
    run_dir, names = config.train.init_from, config.train.init_modules
    _, source, source_cfg = load_model_from_run(run_dir, "cpu", data_dir=data_dir)
    if "seq" in names and source_cfg.model != config.model:
        raise ValueError(f"train.init_from: {run_dir} has model config {source_cfg.model}, this run has {config.model}")
    for name in names:
        mine, theirs = getattr(model, name, None), getattr(source, name, None)
        if not isinstance(mine, nn.Module) or not isinstance(theirs, nn.Module):
            raise ValueError(f"train.init_modules: {name!r} is not a module of both models (this run and {run_dir})")
        mine.load_state_dict(theirs.state_dict())
