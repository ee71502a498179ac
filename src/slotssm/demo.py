"""`slotssm demo`: generate bouncing balls, train a small SlotSSM for video prediction, evaluate its rollouts and
write `report.md` with pictures and numbers. A few minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

DEMO_OVERRIDES = (
    "train.ckpt_every=100",
    "train.log_every=25",
    "data.num_train=512",
    "data.num_val=32",
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train a small SlotSSM on bouncing balls and write a report (minutes, CPU)")
    p.add_argument("--out", default="slotssm-demo", help="output directory (default ./slotssm-demo)")
    p.add_argument("--model", default="slotssm", help="sequence model (default slotssm)")
    p.add_argument("--minutes", type=float, default=3.0,
                   help="training budget: the step count is set from a timing of the first steps (default 3)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config overrides, e.g. train.steps=200")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from slotssm import viz
    from slotssm.tasks import get_task
    from slotssm.train.checkpoint import load_model_from_run
    from slotssm.train.config import apply_overrides
    from slotssm.train.trainer import train

    start = time.perf_counter()
    out = Path(args.out)
    run_dir, data_dir = out / "run", out / "data"
    overrides = list(DEMO_OVERRIDES) + list(args.overrides)
    task_cls = get_task("video_prediction")
    config = apply_overrides(task_cls.default_config("small", args.model), overrides)
    resume = (run_dir / "ckpt-latest").exists()
    if not resume and not any(o.startswith("train.steps=") for o in args.overrides):
        from slotssm.reproduce import calibrate_config

        seconds = calibrate_config(config, data_dir)
        steps = int(min(2000, max(50, args.minutes * 60 / seconds)))
        print(f"demo: {seconds:.3f} s per training step here -> {steps} steps for {args.minutes:g} min")
        overrides.append(f"train.steps={steps}")
        config = apply_overrides(config, [overrides[-1]])
    metrics = train(config, run_dir, data_dir=data_dir, resume=resume, progress=not args.no_progress,
                    overrides=overrides)
    task, model, _ = load_model_from_run(run_dir, "cpu", data_dir=data_dir)
    _, val = task.datasets()
    d = config.data
    pictures = task.visualise(model.eval(), val, out / "figures", device=torch.device("cpu"))
    model_curve = [metrics[f"mse_step_{i + 1}"] for i in range(d.rollout)]
    refs = task.reference_metrics(val)
    copy_curve = [refs["last frame repeated"][f"mse_step_{i + 1}"] for i in range(d.rollout)]
    metrics["blank_frame_mse"] = refs["blank frame"]["rollout_mse"]
    pictures.append(viz.plot_curves({f"{args.model} rollout": model_curve, "repeat last frame": list(copy_curve)},
                                    out / "figures" / "rollout_vs_copy.png", "rollout step", "MSE per pixel",
                                    "Bouncing balls: rollout error"))
    curves = viz.plot_metric_curves_from_jsonl(run_dir / "metrics.jsonl", out / "figures")
    # the per-step MSEs are all in rollout_mse.png already
    pictures += [p for p in curves if not Path(p).stem.startswith(("mse_step_", "lr", "it_s"))]
    wall = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    report = write_report(out, config, metrics, model_curve, copy_curve, pictures, wall, params)
    print(f"report: {report} ({wall:.0f} s)")
    return 0


def write_report(out: Path, config, metrics: dict, model_curve, copy_curve, pictures, wall: float, params: int) -> Path:
    d, t = config.data, config.train
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    rows = "\n".join(
        f"| {i + 1} | {m:.4f} | {c:.4f} |" for i, (m, c) in enumerate(zip(model_curve, copy_curve)) if i in (0, 4, 9, 14, 19)
    )
    best_ref = min(float(np.mean(copy_curve)), metrics["blank_frame_mse"])
    if metrics["rollout_mse"] < best_ref:
        verdict = ("Over the whole rollout the model beats both model-free answers (repeating the last frame, a blank "
                   "frame): it has learned the balls' motion.")
    elif metrics["rollout_mse_first"] < copy_curve[0]:
        verdict = (f"The model predicts the next frame better than repeating the last one (step 1: "
                   f"{metrics['rollout_mse_first']:.4f} vs {copy_curve[0]:.4f}), but its own predictions drift as "
                   f"they are fed back: over {len(copy_curve)} steps it does not beat the best model-free answer "
                   f"({metrics['rollout_mse']:.4f} vs {best_ref:.4f}). Train longer (`--minutes`).")
    else:
        verdict = ("The model is no better than repeating the last frame even one step ahead: in this budget it has "
                   "only learned the average image. Train longer (`--minutes`).")
    images = "\n".join(f"![{Path(p).stem}]({rel(p)})" for p in pictures if str(p).endswith((".png", ".gif")))
    text = f"""# slotssm demo: video prediction on bouncing balls

Model **{config.model_name}** ({params:,} parameters), {t.steps} training steps of batch {t.batch_size} on
{d.num_train} generated videos ({d.image_size}x{d.image_size}, {d.num_objects} balls, {d.train_frames} frames),
evaluated on {d.num_val} held-out videos: {d.context} context frames, then a {d.rollout}-frame autoregressive
rollout through the model's recurrent `step` on its own predictions (paper §7.1 protocol).
Wall time of the whole demo on this machine: **{wall:.0f} s**.

| metric | value |
|---|---|
| final training loss (BCE) | {metrics.get('train_loss', float('nan')):.4f} |
| rollout MSE, mean over {d.rollout} steps | {metrics['rollout_mse']:.4f} |
| rollout MSE, first step | {metrics['rollout_mse_first']:.4f} |
| rollout MSE, last step | {metrics['rollout_mse_last']:.4f} |
| "repeat the last frame" MSE, mean | {float(np.mean(copy_curve)):.4f} |
| "blank frame" MSE, mean | {metrics['blank_frame_mse']:.4f} |

{verdict}

Per-step MSE (model vs repeating the last context frame):

| step | {config.model_name} | repeat last frame |
|---|---|---|
{rows}

{images}

Resolved config: `run/config.json`; metrics: `run/metrics.jsonl`, `run/eval.json`; TensorBoard: `run/tb`.
"""
    path = out / "report.md"
    path.write_text(text)
    (out / "summary.json").write_text(json.dumps({"wall_s": wall, **metrics}, indent=2))
    return path
