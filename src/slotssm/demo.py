"""`slotssm demo`: generate bouncing balls, train a small SlotSSM for video prediction within a wall-clock budget,
evaluate its rollouts on held-out videos against every model-free answer, and write `report.md` with pictures.

The budget (`--minutes`, default 5) is wall time for the whole demo: data generation, training and evaluation.
Training stops at its deadline (`train.time_limit_s`), however fast or loaded the machine is, and its learning-rate
schedule is stretched over that time. The verdict "learned" needs both of
  - the mean 20-step rollout MSE <= LEARNED_RATIO x the best model-free answer (blank frame, per-pixel mean image,
    mean context frame, last frame repeated): beating a blank frame alone is what a blurred mean frame does;
  - the first rollout step better than copying the last frame (it predicts motion, not the average image).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

LEARNED_RATIO = 0.8
EVAL_RESERVE_S = 45.0  # budget kept for evaluation, references and pictures after training
# The demo's settings, and why they differ from the paper's video-prediction protocol (64x64 frames, 4 balls,
# 300K teacher-forced steps); each is repeated in the report.
DEMO_SETTINGS = {
    "data.image_size=32": "32x32 frames (paper 64x64): a 2-core CPU trains 16 tokens per frame 10x faster",
    "data.num_objects=1": ("1 ball (paper 4). Measured here on one thread, rollout MSE over the best model-free "
                           "answer: 1 ball 0.77x (1000 steps, two feedback passes), 2 balls 0.97-1.12x (1000-1400 "
                           "steps, two passes), 3 balls 1.20x (1400 steps, one pass): with more balls the rollout "
                           "drifts within this budget"),
    "model.num_slots=3": ("3 slots for the ball and the background (Table 2: 6): twice the training steps in the "
                          "budget, and 0.73x the best model-free answer at 1000 steps against 0.77x with 6 slots"),
    "data.num_train=512": "512 training videos of 20 frames, 32 held-out videos of 30 frames (another seed)",
    "data.num_val=32": None,
    "data.feedback_passes=2": ("two gradient-free passes feed the model its own predictions after the 10 context "
                               "frames (the paper trains with teacher forcing only): taught by teacher forcing alone "
                               "(3 balls, 1400 steps) the one-step error was 0.004 and the 20-step rollout 1.61x the "
                               "mean image; one pass 1.20x"),
    "train.steps=3000": "the lr schedule length if the deadline does not come first (it does, on 2 cores)",
    "train.optim.lr=1e-3": "lr 1e-3 with 50 warm-up steps (a few minutes of training, not 300K steps)",
    "train.batch_size=16": ("batch 16, with which the demo's numbers were measured (the video-prediction preset "
                            "trains its 2 balls at batch 8)"),
    "train.ckpt_every=200": None,
    "train.log_every=25": None,
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train a small SlotSSM on bouncing balls and write a report (minutes, CPU)")
    p.add_argument("--out", default="slotssm-demo", help="output directory (default ./slotssm-demo)")
    p.add_argument("--model", default="slotssm", help="sequence model (default slotssm)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="wall-clock budget of the whole demo; training stops at its deadline (default 5)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config overrides, e.g. data.num_objects=2 (train.steps=N: train N steps, no deadline)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from slotssm import viz
    from slotssm.tasks import get_task
    from slotssm.train.checkpoint import load_model_from_run
    from slotssm.train.config import apply_overrides
    from slotssm.train.trainer import train

    start = time.perf_counter()
    if not args.minutes > 0:
        raise ValueError(f"--minutes: expected a positive budget, got {args.minutes}")
    out = Path(args.out)
    run_dir, data_dir = out / "run", out / "data"
    task_cls = get_task("video_prediction")
    base = task_cls.default_config("small", args.model)
    # A model setting applies where the model has the field (a single-state model has no slot count).
    fields = {f.name for f in dataclasses.fields(base.model)}
    overrides = [s for s in DEMO_SETTINGS if not s.startswith("model.") or s[6:].split("=")[0] in fields]
    overrides += list(args.overrides)
    config = apply_overrides(base, overrides)
    task_cls(config, data_dir).datasets()  # generate (or find) the videos: inside the budget
    resume = (run_dir / "ckpt-latest").exists()
    if not any(o.startswith("train.steps=") for o in args.overrides):
        limit = max(5.0, args.minutes * 60 - (time.perf_counter() - start) - EVAL_RESERVE_S)
        overrides.append(f"train.time_limit_s={limit:.1f}")
        config = apply_overrides(config, [overrides[-1]])
        print(f"demo: training for {limit:.0f} s of a {args.minutes:g}-minute budget")
    metrics = train(config, run_dir, data_dir=data_dir, resume=resume, progress=not args.no_progress,
                    overrides=overrides)
    task, model, _ = load_model_from_run(run_dir, "cpu", data_dir=data_dir)
    _, val = task.datasets()
    d = config.data
    pictures = task.visualise(model.eval(), val, out / "figures", device=torch.device("cpu"))
    refs = task.reference_metrics(val)
    curves = {f"{args.model} rollout": [metrics[f"mse_step_{i + 1}"] for i in range(d.rollout)]}
    curves.update({k: [v[f"mse_step_{i + 1}"] for i in range(d.rollout)] for k, v in refs.items()})
    pictures.append(viz.plot_curves(curves, out / "figures" / "rollout_vs_references.png", "rollout step",
                                    "MSE per pixel", "Bouncing balls: rollout error vs model-free answers"))
    health_dir = out / "figures" / "health"
    pictures += [p for p in viz.plot_metric_curves_from_jsonl(run_dir / "metrics.jsonl", health_dir)
                 if Path(p).stem in ("loss", "slot_cosine", "slot_sensitivity", "pred_sensitivity")]
    metrics.update(_health_from_eval(run_dir))
    wall = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    learned, verdict = judge(metrics, refs)
    report = write_report(out, config, metrics, refs, pictures, wall, params, verdict)
    (out / "summary.json").write_text(json.dumps({"wall_s": wall, "learned": learned, **metrics,
                                                  "references": {k: v["rollout_mse"] for k, v in refs.items()}},
                                                 indent=2))
    print(f"{'LEARNED' if learned else 'NOT LEARNED'}: {verdict}")
    print(f"report: {report} ({wall:.0f} s)")
    return 0


def judge(metrics: dict, refs: dict[str, dict]) -> tuple[bool, str]:
    """(learned, the sentence saying why) by the rule of the module docstring."""
    best_name = min(refs, key=lambda k: refs[k]["rollout_mse"])
    best = refs[best_name]["rollout_mse"]
    copy_first = refs["last frame repeated"]["rollout_mse_first"]
    mean, first = metrics["rollout_mse"], metrics["rollout_mse_first"]
    over = mean <= LEARNED_RATIO * best
    motion = first < copy_first
    if over and motion:
        return True, (f"learned: over the whole rollout the model's error is {mean / best:.2f}x the best model-free "
                      f"answer ({best_name}, {best:.4f}; the rule asks <= {LEARNED_RATIO}x), and one step ahead it "
                      f"beats copying the last frame ({first:.4f} vs {copy_first:.4f}).")
    if motion:
        return False, (f"not learned: one step ahead the model beats copying the last frame ({first:.4f} vs "
                       f"{copy_first:.4f}), but over the rollout its error is {mean / best:.2f}x the best "
                       f"model-free answer ({best_name}, {best:.4f}), above the {LEARNED_RATIO}x the rule asks: "
                       f"its own predictions drift as they are fed back. Train longer (`--minutes`).")
    return False, (f"not learned: even one step ahead the model is no better than copying the last frame "
                   f"({first:.4f} vs {copy_first:.4f}); rollout error {mean / best:.2f}x the best model-free "
                   f"answer ({best_name}). Train longer (`--minutes`).")


def write_report(out: Path, config, metrics: dict, refs: dict, pictures, wall: float, params: int,
                 verdict: str) -> Path:
    d, t = config.data, config.train
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    names = list(refs)
    rows = "\n".join(
        f"| {i} | {metrics[f'mse_step_{i}']:.4f} | " + " | ".join(f"{refs[k][f'mse_step_{i}']:.4f}" for k in names)
        + " |" for i in (1, 5, 10, 15, 20) if i <= d.rollout
    )
    ref_rows = "\n".join(f"| {k} | {refs[k]['rollout_mse']:.4f} | {refs[k]['rollout_mse_first']:.4f} |" for k in names)
    settings = "\n".join(f"- `{k}`: {why}" for k, why in DEMO_SETTINGS.items() if why)
    balls = f"{d.num_objects} ball" + ("s" if d.num_objects != 1 else "")
    health_rows = "\n".join(
        f"| {k} | {metrics.get(f'health_{k}_first', float('nan')):.3g} | {metrics.get(f'health_{k}', float('nan')):.3g} |"
        for k in ("slot_cosine", "slot_sensitivity", "pred_sensitivity", "encoder_entropy", "decoder_entropy"))
    images = "\n".join(f"![{Path(p).stem}]({rel(p)})" for p in pictures if str(p).endswith((".png", ".gif")))
    text = f"""# slotssm demo: video prediction on bouncing balls

**Verdict: {verdict}**

Model **{config.model_name}** ({params:,} parameters), {metrics['step']} training steps of batch {t.batch_size}
on {d.num_train} generated videos ({d.image_size}x{d.image_size}, {balls}, {d.train_frames} frames),
evaluated on {d.num_val} held-out videos of another seed: {d.context} context frames, then a {d.rollout}-frame
autoregressive rollout through the model's recurrent `step` on its own predictions (paper §7.1 protocol).
Wall time of the whole demo on this machine: **{wall:.0f} s**.

| answer | rollout MSE, mean over {d.rollout} steps | first step |
|---|---|---|
| **{config.model_name}** | **{metrics['rollout_mse']:.4f}** | **{metrics['rollout_mse_first']:.4f}** |
{ref_rows}

"Learned" needs the mean rollout MSE <= {LEARNED_RATIO} x the best model-free answer **and** a first step better
than repeating the last frame. The mean image is the per-pixel mean of the scored frames themselves, the best
constant image for them.

Per-step MSE:

| step | {config.model_name} | {' | '.join(names)} |
|---|---|{'---|' * len(names)}
{rows}

Settings that differ from the paper's protocol, and why:
{settings}

Training health at the first and the last probe (slotssm.train.health, 8 held-out videos; summary in `run/eval.json`):

| probe | first | last |
|---|---|---|
{health_rows}

{images}

Resolved config: `run/config.json`; metrics: `run/metrics.jsonl`, `run/eval.json`; TensorBoard: `run/tb`.
"""
    path = out / "report.md"
    path.write_text(text)
    return path


def _health_from_eval(run_dir: Path) -> dict[str, float]:
    """The health summary of eval.json as flat `health_*` floats (empty if absent)."""
    try:
        summary = json.loads((run_dir / "eval.json").read_text()).get("health", {})
    except (OSError, ValueError):
        return {}
    return {f"health_{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}
