"""Commands `slotssm train`, `slotssm eval` and `slotssm viz`.

    slotssm train TASK --model NAME [--preset small] [--set k=v ...] --out DIR [--data-dir DIR] [--device D] [--resume]
    slotssm eval RUN_DIR [--split val|train] [--data-dir DIR] [--batch-size N] [--device auto]
    slotssm viz RUN_DIR [--data-dir DIR] [--split val|train] [--device auto]   -> RUN_DIR/viz, RUN_DIR/viz/curves

`torchrun --nproc_per_node N -m slotssm train ...` trains data-parallel (see train/distributed.py). A bad task, model,
preset or --set key raises ValueError, which `slotssm.cli.main` prints as one line with exit code 2; a diverged
run (NaN/Inf loss) exits with code 1. Every value is checked before the run directory is written: the config
builds the model (on the meta device, no memory), the scan implementation exists on the device, --out and
--data-dir are directories or can become ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from slotssm.config import positive_int

DEFAULT_DATA_DIR = os.environ.get("SLOTSSM_DATA_DIR", "data")
# Chosen by the TASK argument, --model and --preset; a --set of them would record one thing and run another.
NOT_SETTABLE = {"task": "TASK", "model_name": "--model", "preset": "--preset"}


def _with_catalogue(parser) -> None:
    """`--help` ends with the tasks, models and presets (listed when asked: building it imports every task)."""
    format_help = parser.format_help

    def with_list():
        from slotssm.tasks.registry import catalogue

        parser.epilog = catalogue()
        return format_help()

    parser.format_help = with_list


def add_parser(subparsers) -> None:
    """Register `train`, `eval` and `viz` on the `slotssm` command's sub-parsers."""
    p = subparsers.add_parser("train", help="train a model on a task", description="Train MODEL on TASK.",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _with_catalogue(p)
    p.add_argument("task", metavar="TASK", help="task name (listed below; `slotssm list`)")
    p.add_argument("--model", required=True, help="sequence model name (listed below), checked by the task")
    p.add_argument("--preset", default=None, help="tiny, small or paper (default: small; with --resume the run's own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.optim.lr=1e-3 (repeatable)")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="run directory (config, logs, checkpoints)")
    p.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR),
                   help="where datasets are cached (default: $SLOTSSM_DATA_DIR or ./data)")  # fmt: skip
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (same as --set train.device=...)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("eval", help="evaluate a run's checkpoint", description="Evaluate a trained run.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--data-dir", type=Path, default=None, help="default: the run's own data directory")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the run's train.eval_batch_size")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser("viz", help="figures of a trained run", description="Draw figures into RUN_DIR/viz.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--data-dir", type=Path, default=None, help="default: the run's own data directory")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_viz)


def run_train(args) -> int:
    from slotssm.tasks.registry import get_task
    from slotssm.train.config import apply_overrides, load_run_config
    from slotssm.train.trainer import TrainingDivergedError, train

    task_cls = get_task(args.task)
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device is not None else [])
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in NOT_SETTABLE:
            raise ValueError(f"--set {item}: {key} is chosen by {NOT_SETTABLE[key]}, not by --set")
    _check_dir("--out", args.out)
    _check_dir("--data-dir", args.data_dir)
    if args.resume and (args.out / "config.json").is_file():
        # Continue from the run's own resolved config; --set may then change what a resume allows (train.steps...).
        base = load_run_config(args.out)
        given = {"task": args.task, "model_name": args.model, "preset": args.preset or base.preset}
        for key, value in given.items():
            if getattr(base, key) != value:
                raise ValueError(f"{args.out} is a run of {key}={getattr(base, key)!r}, not {value!r}")
    else:
        preset = args.preset or "small"
        task_cls.check_preset(preset)
        base = task_cls.default_config(preset, args.model)
    config = apply_overrides(base, overrides)
    check_buildable(config, args.data_dir)
    try:
        metrics = train(
            config, args.out, data_dir=args.data_dir, resume=args.resume, progress=not args.no_progress,
            overrides=overrides,
        )  # fmt: skip
    except TrainingDivergedError as err:
        print(f"slotssm train: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics, indent=2))
    return 0


def _check_dir(flag: str, path: Path) -> None:
    """`path` is a directory, or can be made one: no existing file on it or on a parent."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is" if p == path else f"has a parent {p} that is"
                raise ValueError(f"{flag} {path}: {what} a file, not a directory")
            if not os.access(p, os.W_OK):
                raise ValueError(f"{flag} {path}: {p} is not writable")
            return


def check_buildable(config, data_dir) -> None:
    """Every value of `config` works before anything is written: the device exists, the task builds its model
    (on the meta device: shapes only, no memory), and the scan implementation it asks for runs on that device."""
    import torch

    from slotssm.ssm import Mamba, Mamba2
    from slotssm.ssm.kernels import resolve_impl
    from slotssm.tasks.registry import get_task
    from slotssm.train.distributed import resolve_device
    from slotssm.train.stages import check_stages

    device = resolve_device(config.train.device)
    try:
        with torch.device("meta"):
            model = get_task(config.task)(config, data_dir).build_model()
    except ValueError:
        raise
    except (RuntimeError, TypeError, ZeroDivisionError) as err:
        detail = " ".join(str(err).split())[:200]
        raise ValueError(f"model: {config.model_name} does not build with this config ({detail}); "
                         f"check the --set model.* values") from None
    check_stages(config, data_dir)  # every curriculum stage builds and its weights fit the next
    for module in model.modules():
        if isinstance(module, (Mamba, Mamba2)):
            try:
                resolve_impl("selective_scan" if isinstance(module, Mamba) else "ssd_scan", module.impl, device)
            except ValueError as err:
                raise ValueError(f"model.impl: {str(err).removeprefix('impl: ')}") from None


def _load(args):
    from slotssm.train.checkpoint import load_model_from_run
    from slotssm.train.distributed import resolve_device

    device = resolve_device(args.device)
    task, model, config = load_model_from_run(args.run_dir, device, data_dir=args.data_dir)
    train_set, val_set = task.datasets()
    return task, model, config, device, (val_set if args.split == "val" else train_set)


def run_eval(args) -> int:
    from slotssm.train.checkpoint import find_checkpoint, verify_checkpoint
    from slotssm.train.evaluation import evaluate_model, write_eval_json

    task, model, config, device, dataset = _load(args)
    batch_size = args.batch_size or config.train.eval_batch_size
    amp = "off" if config.train.amp == "fp16" and device.type != "cuda" else config.train.amp  # fp16 is CUDA-only
    metrics = evaluate_model(task, model, dataset, batch_size=batch_size, device=device, amp=amp)
    step = int(verify_checkpoint(find_checkpoint(args.run_dir))["step"])
    path = write_eval_json(args.run_dir, step=step, split=args.split, metrics=metrics)
    print(json.dumps({"step": step, "split": args.split, "metrics": metrics}, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def run_viz(args) -> int:
    from slotssm.train.metrics_log import METRICS_FILE
    from slotssm.viz import plot_metric_curves_from_jsonl

    task, model, config, device, dataset = _load(args)
    out_dir = Path(args.run_dir) / "viz"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list(task.visualise(model, dataset, out_dir, device=device))
    metrics_path = Path(args.run_dir) / METRICS_FILE
    if metrics_path.is_file():
        paths += plot_metric_curves_from_jsonl(metrics_path, out_dir / "curves")  # one PNG per metric
    for path in paths:
        print(path)
    return 0
