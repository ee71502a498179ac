"""The training loop: `train(config, out_dir, data_dir=...)`, the same code for one process and for torchrun.

One step: a batch from the sharded resumable order (sampler.py) -> `task.loss` under autocast -> backward ->
gradients averaged over processes -> clipped -> AdamW -> learning-rate schedule. Around it: logs every `log_every`
steps (metrics.jsonl, TensorBoard, a progress bar), evaluation every `eval_every` steps and at the end (eval.json),
checkpoints every `ckpt_every` steps and at the end. Only rank 0 writes files.

Resuming reloads weights, optimizer, scheduler, grad scaler, every rank's RNG states and the data position, so on
a CPU a run interrupted and resumed ends with bit-identical weights to one that ran straight through. Evaluation in
the middle of training restores the RNG states afterwards, so it never shifts the training randomness.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from slotssm.config import RunConfig, config_to_dict, flatten_dict, read_config_file, save_config
from slotssm.data.dataset import to_device
from slotssm.tasks.base import Task
from slotssm.tasks.registry import get_task
from slotssm.train import distributed as dist_utils
from slotssm.train import health
from slotssm.train.checkpoint import (
    LATEST,
    capture_rng_state,
    clear_divergence,
    find_checkpoint,
    find_valid_checkpoint,
    init_from_run,
    load_model_weights,
    load_trainer_state,
    read_divergence,
    restore_rng_state,
    save_checkpoint,
    write_divergence,
)
from slotssm.train.config import load_run_config
from slotssm.train.distributed import DistContext
from slotssm.train.evaluation import amp_dtype, autocast, evaluate_model, write_eval_json
from slotssm.train.metrics_log import MetricsLogger, read_metrics
from slotssm.train.optim import build_optimizer
from slotssm.train.sampler import DataPosition, ShardedBatchSampler
from slotssm.train.schedule import build_scheduler
from slotssm.train.stages import stage_configs, stage_dir, stage_overrides

# After a divergence (NaN/Inf), a resume may also change these, and must change one: the same settings repeat it.
AFTER_DIVERGENCE_KEYS = frozenset({"train.optim.lr", "train.optim.grad_clip", "train.optim.warmup_steps"})
# Settings a resumed run may change: they decide how long and how chatty the run is, not what it computes.
RESUMABLE_KEYS = frozenset(
    f"train.{k}" for k in ("steps", "log_every", "eval_every", "ckpt_every", "num_workers", "eval_batch_size", "device",
                           "time_limit_s", "health")
)


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm became NaN/Inf; the message names the step and the last good checkpoint."""


@dataclass
class _Run:
    """Everything one training run holds; built by `_prepare`, advanced by `_loop`."""

    config: RunConfig
    ctx: DistContext
    out_dir: Path
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    train_set: Dataset
    val_set: Dataset
    sampler: ShardedBatchSampler
    logger: MetricsLogger | None = None
    step: int = 0
    data: DataPosition = field(default_factory=DataPosition)
    last_ckpt: tuple[Path, int] | None = None
    train_metrics: dict = field(default_factory=dict)
    probe_batch: dict | None = None  # the fixed batch of the health probes (rank 0, when the task has a probe)
    grad_norms: dict = field(default_factory=dict)  # per top-level module, at the last log step
    health_warned: set = field(default_factory=set)
    started: float = field(default_factory=time.perf_counter)


def train(
    config: RunConfig, out_dir, *, data_dir, resume: bool = False, progress: bool = True, overrides=()
) -> dict:
    """Train `config` into `out_dir`; returns the final metrics ({"step", "train_loss", **validation metrics}).

    `data_dir` is where the task caches its datasets; `overrides` (the CLI's --set strings) are recorded in
    config.json. With `resume=True` the run continues from `out_dir`'s last checkpoint; without it, a directory that
    already holds a checkpoint is refused. With `train.stages` the curriculum's stages train first, each in its
    own directory under `out_dir` (slotssm.train.stages), and `resume` continues the chain wherever it stopped.
    Raises TrainingDivergedError on a NaN/Inf loss.
    """
    ctx = dist_utils.setup(config.train.device)
    orderly = False  # orderly: every process stops at the same point and may leave the group together
    out_dir, data_dir, overrides = Path(out_dir), Path(data_dir), list(overrides)
    try:
        start = None
        if config.train.stages:
            start = _train_stages(config, out_dir, data_dir, resume=resume, progress=progress, overrides=overrides,
                                  ctx=ctx)
        metrics = _train_one(config, out_dir, data_dir, resume=resume, progress=progress, overrides=overrides,
                             ctx=ctx, start=start)
        orderly = True
        return metrics
    except TrainingDivergedError:
        orderly = True  # the loss is averaged over processes, so all of them stop at the same step
        raise
    finally:
        dist_utils.cleanup(ctx, ok=orderly)


def _train_one(config, out_dir, data_dir, *, resume, progress, overrides, ctx, start=None) -> dict:
    """One run directory, from set-up to its final evaluation; `start` = (run directory, module names) it starts
    from instead of `train.init_from` (a curriculum's previous stage)."""
    run = None
    try:
        run = _prepare(config, out_dir, data_dir, resume=resume, overrides=overrides, ctx=ctx, start=start)
        _loop(run, progress=progress)
        return _finish(run)
    finally:
        if run is not None and run.logger is not None:
            run.logger.close()


def _train_stages(config, out_dir, data_dir, *, resume, progress, overrides, ctx) -> tuple[Path, tuple[str, ...]]:
    """Train the curriculum stages of `config` not finished yet (slotssm.train.stages); returns where the run
    itself starts: (the last stage's directory, train.stage_modules)."""
    configs = stage_configs(config)
    dirs = [stage_dir(out_dir, i) for i in range(len(configs))]
    if resume:
        if not (out_dir / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: no run in {out_dir}")
        _check_resumable(load_run_config(out_dir), config, out_dir)
    else:
        held = [d for d in [out_dir, *dirs] if find_checkpoint(d) is not None]
        if held:
            raise ValueError(f"{out_dir} already holds a run ({held[0]}); pass --resume to continue it, or another "
                             f"--out")
        if ctx.is_main:  # the whole chain, for --resume
            out_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, out_dir / "config.json", overrides=overrides,
                        extra={"data_dir": str(data_dir), "world_size": ctx.world_size})
    start = None
    for i, (cfg, d) in enumerate(zip(configs, dirs)):
        dist_utils.barrier()  # the previous stage's files are written before anyone reads them
        begun = (d / "config.json").is_file()
        if begun and (d / "eval.json").is_file():
            saved = load_run_config(d)
            _check_resumable(saved, cfg, d)  # a finished stage is reused only with its own settings
            if saved.train.steps == cfg.train.steps:
                start = (d, config.train.stage_modules)
                continue
        if ctx.is_main:
            _say(f"stage {i + 1} of {len(configs)} ({config.train.stages[i]}) in {d}")
        _train_one(cfg, d, data_dir, resume=begun, progress=progress,
                   overrides=[*overrides, *stage_overrides(config, i)], ctx=ctx, start=start)
        start = (d, config.train.stage_modules)
    dist_utils.barrier()
    if ctx.is_main:
        _say(f"stages done; the run itself in {out_dir}")
    return start


# ------------------------------------------------------------------------------------------------------ set up


def _prepare(config: RunConfig, out_dir: Path, data_dir: Path, *, resume, overrides, ctx: DistContext,
             start: tuple[Path, tuple[str, ...]] | None = None) -> _Run:
    dtype = amp_dtype(config.train.amp, ctx.device)
    ckpt = find_checkpoint(out_dir)
    if resume:
        if ckpt is None and not (out_dir / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: no checkpoint in {out_dir}")
        _check_resumable(load_run_config(out_dir), config, out_dir, read_divergence(out_dir), say=ctx.is_main)
        overrides = read_config_file(out_dir).get("overrides", []) + overrides
        if ckpt is None and ctx.is_main:  # stopped before its first checkpoint: its config restarts it from step 0
            _say(f"{out_dir}: no checkpoint yet; restarting from step 0 with the run's config")
    elif ckpt is not None:
        raise ValueError(f"{out_dir} already holds a run ({ckpt.name}); pass --resume to continue it, or another --out")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        extra = {"data_dir": str(data_dir), "world_size": ctx.world_size,
                 **({"started_from": {"run": str(start[0]), "modules": list(start[1])}} if start else {})}
        save_config(config, out_dir / "config.json", overrides=overrides, extra=extra)

    _seed_all(config.train.seed)  # the same initial weights on every process
    task = get_task(config.task)(config, data_dir)
    model = task.build_model()
    if not (resume and ckpt is not None):  # a resumed run has its own weights
        if start is not None:  # a curriculum's previous stage
            init_from_run(model, dataclasses.replace(
                config, train=dataclasses.replace(config.train, init_from=str(start[0]), init_modules=start[1])),
                data_dir)
        elif config.train.init_from:
            init_from_run(model, config, data_dir)
    model = model.to(ctx.device)
    dist_utils.broadcast_module(model)
    optimizer = build_optimizer(model, config.train.optim)
    scheduler = build_scheduler(optimizer, config.train.optim, config.train.steps)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=config.train.amp == "fp16")
    train_set, val_set = _datasets(task, ctx)
    sampler = ShardedBatchSampler(
        len(train_set), config.train.batch_size, seed=config.train.seed, rank=ctx.rank, world_size=ctx.world_size
    )
    _seed_all(config.train.seed + ctx.rank)  # per-process randomness (dropout, noise) from here on
    run = _Run(config, ctx, out_dir, task, model, optimizer, scheduler, scaler, dtype, train_set, val_set, sampler)
    if resume and ckpt is not None:
        _restore(run, ckpt)
    run.logger = MetricsLogger(out_dir, enabled=ctx.is_main, resume_step=run.step if resume else None)
    if ctx.is_main and config.train.health and type(task).probe is not Task.probe and len(val_set) >= 2:
        items = [val_set[i] for i in range(min(health.PROBE_VIDEOS, len(val_set)))]
        run.probe_batch = to_device(task.collate(items), ctx.device)
    return run


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _datasets(task: Task, ctx: DistContext) -> tuple[Dataset, Dataset]:
    """Rank 0 builds (and caches) the datasets first, so processes never generate the same files at once."""
    if ctx.is_main:
        sets = task.datasets()
        dist_utils.barrier()
    else:
        dist_utils.barrier()
        sets = task.datasets()
    return sets


def _say(message: str) -> None:
    print(f"slotssm train: {message}", file=sys.stderr)


def _check_resumable(saved: RunConfig, new: RunConfig, out_dir: Path, diverged: dict | None = None,
                     say: bool = False) -> None:
    """Only RESUMABLE_KEYS may change; after a divergence also AFTER_DIVERGENCE_KEYS, and one of them must."""
    a, b = flatten_dict(config_to_dict(saved)), flatten_dict(config_to_dict(new))
    allowed = RESUMABLE_KEYS | (AFTER_DIVERGENCE_KEYS if diverged else frozenset())
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in allowed)
    if diverged:
        fixes = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(AFTER_DIVERGENCE_KEYS) if a.get(k) != b.get(k)]
        where = f"{diverged.get('what', 'the loss')} became non-finite at step {diverged.get('step')}"
        if not fixes and not changed:
            raise ValueError(
                f"cannot resume {out_dir} unchanged: {where}, and the same settings repeat the same steps; "
                f"change one of {sorted(AFTER_DIVERGENCE_KEYS)}, e.g. --set train.optim.lr=<lower>"
            )
        if fixes and not changed:
            if say:
                _say(f"resuming {out_dir} after a divergence ({where}) with {', '.join(fixes)}")
                clear_divergence(out_dir)
    if changed:
        diffs = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:6])
        raise ValueError(
            f"cannot resume {out_dir} with a different config ({diffs}); only {sorted(RESUMABLE_KEYS)} may change"
        )


def _restore(run: _Run, ckpt: Path) -> None:
    """Load weights, optimizer, scheduler, scaler, this rank's RNG states and the data position.

    A corrupted newest checkpoint falls back to the older one (with a message); the base learning rates are this
    config's (they may differ from the checkpoint's after a divergence).
    """
    ckpt, meta = find_valid_checkpoint(run.out_dir, warn=_say if run.ctx.is_main else None)
    load_model_weights(run.model, ckpt, verify=False)
    state = load_trainer_state(ckpt)
    if state["world_size"] != run.ctx.world_size:
        raise ValueError(
            f"{ckpt} was written by {state['world_size']} process(es); resume with the same number "
            f"(got {run.ctx.world_size}) so the data order and RNG streams continue exactly"
        )
    run.optimizer.load_state_dict(state["optimizer"])
    base_lrs = list(run.scheduler.base_lrs)  # from this config
    run.scheduler.load_state_dict(state["scheduler"])
    run.scheduler.base_lrs = base_lrs
    for group, base in zip(run.optimizer.param_groups, base_lrs):
        group["initial_lr"] = base
    for group, base, fn in zip(run.optimizer.param_groups, run.scheduler.base_lrs, run.scheduler.lr_lambdas):
        group["lr"] = base * fn(run.scheduler.last_epoch)  # the schedule of this config (train.steps may change)
    if run.scaler.is_enabled() and state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"][run.ctx.rank])
    data = state["data"]
    cfg = run.config.train
    expected = {"seed": cfg.seed, "batch_size": cfg.batch_size, "dataset_len": len(run.train_set)}
    if any(data[k] != v for k, v in expected.items()):
        raise ValueError(f"{ckpt}: the data order was {data}, this run has {expected}; cannot resume exactly")
    run.data = DataPosition(data["epoch"], data["position"])
    run.sampler.start = DataPosition(data["epoch"], data["position"])
    run.step = int(state["step"])
    run.last_ckpt = (ckpt, int(meta["step"]))
    run.train_metrics = dict(meta.get("metrics", {}))


# -------------------------------------------------------------------------------------------------------- loop


def _loop(run: _Run, *, progress: bool) -> None:
    cfg = run.config.train
    loader = DataLoader(
        run.train_set,
        batch_sampler=run.sampler,
        collate_fn=run.task.collate,
        num_workers=cfg.num_workers,
        pin_memory=run.ctx.device.type == "cuda",
        # Workers' seeds come from this generator, not from torch's global one (which must stay untouched).
        generator=torch.Generator().manual_seed(cfg.seed * 7919 + run.ctx.rank),
    )
    params = [p for p in run.model.parameters() if p.requires_grad]
    show = progress and run.ctx.is_main
    bar = tqdm(total=cfg.steps, initial=run.step, desc="train", disable=not show, dynamic_ncols=True)
    window = _Window()
    batches = iter(loader)
    run.started = time.perf_counter()
    try:
        while run.step < cfg.steps:
            batch = to_device(next(batches), run.ctx.device)
            window.add(*_train_step(run, batch, params))
            run.data.advance(run.sampler.batches_per_epoch)
            run.step += 1
            bar.update(1)
            out_of_time = _out_of_time(run)
            if run.step % cfg.log_every == 0 or run.step == cfg.steps or out_of_time:
                _log_train(run, window, bar)
                _log_health(run, bar)
            if out_of_time:
                run.logger.log(run.step, "train", {"time_limit_reached": 1.0})
                _checkpoint(run)
                if show:
                    bar.write(f"train: time limit of {cfg.time_limit_s:g} s reached at step {run.step}")
                break
            if cfg.eval_every and run.step % cfg.eval_every == 0 and run.step < cfg.steps:
                _evaluate_and_log(run, keep_rng=True)
            if run.step % cfg.ckpt_every == 0 or run.step == cfg.steps:
                _checkpoint(run)
    finally:
        bar.close()


def _train_step(run: _Run, batch: dict, params: list[nn.Parameter]) -> tuple[float, float, float, dict]:
    """One optimizer step; returns (loss averaged over processes, lr used, grad norm, the task's logs)."""
    run.model.train()
    with _autocast(run):
        loss, logs = run.task.loss(run.model, batch)
    if loss.ndim != 0:
        raise ValueError(f"{run.config.task}.loss must return a scalar loss, got shape {tuple(loss.shape)}")
    loss_value = dist_utils.all_reduce_mean({"loss": loss.detach().float().item()})["loss"]
    if not math.isfinite(loss_value):
        _diverged(run, "the loss", loss_value)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    dist_utils.all_reduce_grads(params)
    run.scaler.unscale_(run.optimizer)
    if run.probe_batch is not None and (run.step + 1) % run.config.train.log_every == 0:
        run.grad_norms = health.grad_norms(run.model)  # before clipping: what the loss sends to each module
    clip = run.config.train.optim.grad_clip if run.config.train.optim.grad_clip > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    if not math.isfinite(grad_norm) and not run.scaler.is_enabled():  # with fp16 the scaler skips such steps
        _diverged(run, "the gradient norm", grad_norm)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.config.train.time_limit_s > 0:
        _time_schedule(run)
    return loss_value, lr, grad_norm, {k: _to_float(v) for k, v in logs.items()}


def _out_of_time(run: _Run) -> bool:
    """True when the run has a time limit and has used it (decided by rank 0, the same on every process)."""
    limit = run.config.train.time_limit_s
    if limit <= 0:
        return False
    return bool(dist_utils.broadcast_object(time.perf_counter() - run.started >= limit))


def _time_schedule(run: _Run) -> None:
    """With a time limit the lr follows max(step, elapsed fraction x steps): it decays fully by the deadline."""
    cfg = run.config.train
    by_time = int((time.perf_counter() - run.started) / cfg.time_limit_s * cfg.steps)
    step = max(run.scheduler.last_epoch, by_time)
    for group, base, fn in zip(run.optimizer.param_groups, run.scheduler.base_lrs, run.scheduler.lr_lambdas):
        group["lr"] = base * fn(step)


def _log_health(run: _Run, bar: tqdm) -> None:
    """Rank 0: the health probes on the fixed batch (RNG untouched), logged; warnings after warm-up."""
    if run.probe_batch is None:
        return
    with _rng_preserved():
        values = {**health.measure(run.task, run.model, run.probe_batch), **run.grad_norms}
    run.logger.log(run.step, "health", values)
    if run.step <= run.config.train.optim.warmup_steps:
        return
    for flag, text in health.warnings_for(values).items():
        if flag not in run.health_warned:  # once per run and condition: the curves hold the rest
            run.health_warned.add(flag)
            bar.write(f"warning (step {run.step}): {text}")


def _to_float(value) -> float:
    return value.detach().float().item() if isinstance(value, torch.Tensor) else float(value)


def _diverged(run: _Run, what: str, value: float):
    if run.last_ckpt is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last good checkpoint is {run.last_ckpt[0]} (step {run.last_ckpt[1]})"
    step = run.step + 1
    if run.ctx.is_main:
        write_divergence(run.out_dir, step=step, what=what, checkpoint_step=run.last_ckpt and run.last_ckpt[1])
    raise TrainingDivergedError(f"{what} is {value} at step {step}; stopped before updating the weights, {kept}")


def _autocast(run: _Run):
    return autocast(run.ctx.device, run.amp_dtype)


class _Window:
    """Running sums between two log steps."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count, self.lr, self.start = 0, 0.0, time.perf_counter()

    def add(self, loss: float, lr: float, grad_norm: float, logs: dict[str, float]) -> None:
        for k, v in {"loss": loss, "grad_norm": grad_norm, **logs}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count, self.lr = self.count + 1, lr


def _log_train(run: _Run, window: _Window, bar: tqdm) -> None:
    means = dist_utils.all_reduce_mean({k: v / window.count for k, v in window.sums.items()})
    its = window.count / max(time.perf_counter() - window.start, 1e-9)
    record = {"loss": means.pop("loss"), "lr": window.lr, "grad_norm": means.pop("grad_norm"), "it/s": its, **means}
    run.logger.log(run.step, "train", record)
    run.train_metrics = record
    bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{window.lr:.2e}", refresh=False)
    window.reset()


@contextmanager
def _rng_preserved():
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def _evaluate_and_log(run: _Run, *, keep_rng: bool, log: bool = True) -> dict[str, float]:
    """Rank 0 evaluates on the validation set and logs; every process returns the metrics."""
    metrics = {}
    if run.ctx.is_main:
        with _rng_preserved() if keep_rng else nullcontext():
            metrics = evaluate_model(
                run.task, run.model, run.val_set, batch_size=run.config.train.eval_batch_size,
                device=run.ctx.device, amp=run.config.train.amp,
            )  # fmt: skip
        if log:
            run.logger.log(run.step, "val", metrics)
    return dist_utils.broadcast_object(metrics)


def _checkpoint(run: _Run) -> None:
    rng = dist_utils.all_gather_object(capture_rng_state())  # every rank's streams, indexed by rank
    if run.ctx.is_main:
        state = {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
            "rng": rng,
            "world_size": run.ctx.world_size,
            "data": {
                "epoch": run.data.epoch,
                "position": run.data.position,
                "seed": run.config.train.seed,
                "batch_size": run.config.train.batch_size,
                "dataset_len": len(run.train_set),
            },
        }
        save_checkpoint(run.out_dir, model=run.model, trainer_state=state, step=run.step, metrics=run.train_metrics)
    run.last_ckpt = (run.out_dir / LATEST, run.step)
    dist_utils.barrier()


def _finish(run: _Run) -> dict:
    records = read_metrics(run.logger.path) if run.ctx.is_main and run.logger.path.is_file() else []
    # A finished run resumed again has its final validation line already: evaluate, but do not log it twice.
    logged = any(r.get("split") == "val" and r.get("step") == run.step for r in records)
    metrics = _evaluate_and_log(run, keep_rng=False, log=not logged)
    if run.ctx.is_main:
        probes = [r for r in records if r.get("split") == "health"]
        write_eval_json(run.out_dir, step=run.step, split="val", metrics=metrics, health=health.summarise(probes))
    return {"step": run.step, "train_loss": run.train_metrics.get("loss"), **metrics}
