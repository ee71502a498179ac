"""`slotssm reproduce EXPERIMENT`: the paper's comparisons at CPU scale, equal budgets, several seeds, a results page.

Every model of an experiment trains for the same number of steps with the same batch size on the same generated
data (seeds vary the initialisation and the data order). The step count comes from `--budget-minutes`: a short
calibration times a few training steps of each model, then the steps are set so that all runs together fit the
budget with `--jobs` runs in parallel (one thread each). Finished runs (an eval.json) are not run again, so an
interrupted reproduction continues where it stopped; a run made with other settings (another step count, other
overrides, or the same preset name and overrides resolving to another config because a preset changed since) is
refused rather than reused: give another `--runs-dir`. The page `docs/results/EXPERIMENT.md` holds
mean +- std over seeds next to what the paper reports.

A reproduction may take longer than one sitting, and a fresh machine has no run directories. So every finished
run also leaves a record of a few kB beside the page (`docs/results/EXPERIMENT_runs/VARIANT/MODEL/seedK.json`: its
settings, metrics, health summary, minutes and the commit it ran at; for seed 0 also its slot picture), meant to be
committed. A later call takes a run from its record when the settings match (and refuses a record made with other
settings), so `--stop-after-minutes` can split the runs over several sittings; the page is written once every run
has a record. A pre-training run is taken from its record only when its fine-tuning run has one too: fine-tuning
needs the pre-trained weights, which the record does not keep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slotssm.config import curriculum


@dataclass(frozen=True)
class Experiment:
    task: str
    models: tuple[str, ...]
    metrics: tuple[str, ...]  # reported, the first is the headline
    overrides: tuple[str, ...] = ()  # on the task's "small" preset, for every run
    variants: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"": ()})  # label -> extra overrides
    pretrain: dict[str, tuple[str, ...]] = field(default_factory=dict)  # variant -> overrides of a pre-training run
    higher_is_better: bool = False
    # References that use what no model is given (the generator's colours, say): an upper bound to read the models
    # against, not a model-free answer they must beat, so the page's verdict leaves them out.
    upper_references: tuple[str, ...] = ()


_SNITCH_PRETRAIN = ("data.objective=reconstruct", "data.decoder_resolution=32", "data.decoder_norm=true",
                    "data.even_masks=true", "train.optim.lr=1e-3", "train.batch_size=8", "train.steps=2400")

EXPERIMENTS = {
    "video_prediction": Experiment(
        "video_prediction",
        ("slotssm", "slot_transformer", "single_state_ssm", "single_state_ssm_split", "rim", "transformer"),
        ("rollout_mse", "rollout_mse_first", "rollout_mse_last"),
        ("data.num_val=64",),
    ),
    "blinking_balls": Experiment(
        "blinking_balls",
        ("slotssm", "slot_transformer", "single_state_ssm", "slot_rnn", "rim"),
        ("colour_acc", "ball_iou", "pixel_acc", "image_mse"),  # colour: memory; ball IoU: where the balls are
        (),  # the small preset: 32x32 frames, 8x8 patches (16 steps per frame) of 4 sub-patch tokens each
        # Both lengths through the preset's curriculum (1, 2, 3 context frames; L = 160 adds a 5-frame stage):
        # --steps sets the steps of the last stage, at the variant's length. Straight at L = 80 no model learned
        # the colour rule (0.23 against 0.235 for the most frequent colour, 750 steps).
        {"L=80": ("data.num_frames=5",),
         "L=160": ("data.max_frames=10", "data.num_frames=10", "train.stages=[" + ",".join(
             f'"{s}"' for s in curriculum("data.num_frames", {1: 2500, 2: 1500, 3: 1000, 5: 1500})) + "]")},
        higher_is_better=True,
    ),
    "object_centric": Experiment(
        "object_centric", ("oc_slotssm", "savi", "psb"),
        ("fg_ari", "miou", "probe_shape_acc", "probe_color_acc", "probe_position_r2"),
        (), higher_is_better=True,  # the small preset as it is: 600 training videos, 240 held out, batch 8
    ),
    "snitch_localization": Experiment(
        "snitch_localization", ("oc_slotssm", "slotssm", "slot_transformer", "single_state_ssm"),
        ("top1", "top5", "grid_l1"),
        # 512 training videos are too few: a plain CNN on the last frame memorises them and stays at chance on
        # validation, with 4096 it reaches 0.44 top-1 in 1500 steps. 16 tokens per frame (32x32 frames, strides
        # 2-2-2) and 4 layers: the object-centric recipe of the pre-training below.
        ("data.num_train=4096", "data.num_val=128", "data.cnn_strides=[2,2,2]", "model.num_layers=4"),
        {"no pre-training": (), "pre-trained": (), "pre-trained, hard pixels": ()},
        # Pre-training decodes every frame of every slot with the object-centric decoder (group norm, masks that
        # start even), the recipe whose alpha masks split there. Measured for OC-SlotSSM (2000 videos, seed 0):
        # 2400 steps take 31 min, recon MSE 0.0193 -> 0.0095, mask entropy 1.00 -> 0.85. The first recipe (SlotSSM,
        # 16x16 decoding, 400 steps) collapsed (slot cosine 0.985, uniform masks). The same with each frame's worst
        # 2 % of pixels counted again (data.hard_pixels): OC-SlotSSM's slots become image regions, and its
        # fine-tuning reaches top-1 0.445 on seed 0 where the plain pre-training's reaches 0.062, in 65 min. Its
        # decoder is 97 % of a pre-training step (0.55 of 0.57 s forward; the CNN and OC-SlotSSM 0.025), so the
        # variant decodes at 16x16 (bilinearly upsampled to 32x32, the loss at 32x32): 2.2 steps/s against 0.65, and
        # the pair takes 18 + 6 min, top-1 0.359 on seed 0 (docs/results/README.md, snitch localisation).
        pretrain={"pre-trained": _SNITCH_PRETRAIN,
                  "pre-trained, hard pixels": (*_SNITCH_PRETRAIN, "data.hard_pixels=0.02",
                                               "data.decoder_resolution=16")},
        higher_is_better=True,
        upper_references=("hand-written gold tracker",),  # it knows the snitch's colour (tasks/snitch_localization.py)
    ),
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="the paper's comparison at CPU scale, with a results page")
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--budget-minutes", type=float, default=30.0, help="wall-clock budget of all training runs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)), help="runs in parallel")
    p.add_argument("--steps", type=int, default=0, help="training steps per run (0: from the budget)")
    p.add_argument("--runs-dir", default="runs/reproduce")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--results-dir", default="docs/results")
    p.add_argument("--records-dir", default="",
                   help="where each finished run's record goes (default: RESULTS_DIR/EXPERIMENT_runs)")
    p.add_argument("--stop-after-minutes", type=float, default=0.0,
                   help="start no run after this many minutes (but the fine-tuning of a finished pre-training); "
                        "the page waits until every run has a record")
    p.add_argument("--plan", action="store_true",
                   help="print every run and its state (recorded, stopped at a step, to run) and train nothing")
    p.add_argument("--preset", default="small", help="task preset of every run (default small)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra overrides for every run, after the experiment's own")
    p.set_defaults(func=run_reproduce)


def calibrate_config(cfg, data_dir, threads: int | None = None) -> float:
    """Seconds per training step of run config `cfg` on this machine (median of 3 after a warm-up)."""
    import torch

    from slotssm.tasks import get_task

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        task = get_task(cfg.task)(cfg, data_dir)
        model = task.build_model()
        train, _ = task.datasets()
        batch = task.collate([train[i % len(train)] for i in range(cfg.train.batch_size)])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for _ in range(4):
            t0 = time.perf_counter()
            loss, _ = task.loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        return float(np.median(times[1:]))
    finally:
        torch.set_num_threads(before)


def calibrate(exp: Experiment, data_dir: str, overrides: list[str],
              preset: str = "small") -> dict[str, tuple[float, float]]:
    """(seconds per training step, seconds of its curriculum stages) of each model of `exp`, one thread each (the
    runs go in parallel). The stages (`train.stages`) have step counts of their own, so they are a fixed cost."""
    from slotssm.tasks import get_task
    from slotssm.train.config import apply_overrides
    from slotssm.train.stages import stage_configs

    cls, out = get_task(exp.task), {}
    for m in exp.models:
        cfg = apply_overrides(cls.default_config(preset, m), overrides)
        stages = sum(s.train.steps * calibrate_config(s, data_dir, threads=1) for s in stage_configs(cfg))
        out[m] = (calibrate_config(cfg, data_dir, threads=1), stages)
    return out


def _plan(exp: Experiment, seeds: int) -> list[tuple[str, str, int, bool]]:
    """(variant, model, seed, is_pretraining) in the order they must run (pre-training before its fine-tuning)."""
    plan = []
    for variant in exp.variants:
        for model in exp.models:
            for seed in range(seeds):
                if variant in exp.pretrain:
                    plan.append((variant, model, seed, True))
                plan.append((variant, model, seed, False))
    return plan


def _variant_label(variant: str) -> str:
    """A variant's name as a file or directory name ("main" for the unnamed one)."""
    return "".join(c if c.isalnum() or c in "=-" else "_" for c in variant) or "main"


def _run_dir(root: Path, variant: str, model: str, seed: int, pre: bool) -> Path:
    return root / _variant_label(variant) / f"{model}{'-pretrain' if pre else ''}" / f"seed{seed}"


# Every run checkpoints this often, so a reproduction stopped mid-run (a session's end) resumes from the last one.
CKPT_EVERY = 250


def _results_settings(settings: dict) -> dict:
    """`settings` without the checkpoint cadence, which does not change results (runs made before it was set every
    CKPT_EVERY steps carry another value)."""
    return {**settings, "sets": [s for s in settings.get("sets", []) if not s.startswith("train.ckpt_every=")]}


def _check_reuse(run: Path, settings: dict) -> None:
    """Refuse to reuse or resume a run made with other settings (say, another --steps in the same --runs-dir)."""
    saved = run / "reproduce.json"
    settings = _results_settings(settings)
    if saved.exists():
        old = _results_settings(json.loads(saved.read_text()))
    elif (run / "eval.json").exists():  # made before runs kept reproduce.json: only the step count can be checked
        old = {**settings, "steps": json.loads((run / "eval.json").read_text())["step"]}
    else:
        return
    _refuse_other_settings(old, settings, "--runs-dir", run, "run")


def _refuse_other_settings(old: dict, new: dict, flag: str, path: Path, what: str) -> None:
    """Raise ValueError naming `flag`, `path` and each setting that differs when `old` != `new`; their resolved
    configs ("config", where both have one) are compared after migrating the old one (`_config_changes`)."""
    old, new = dict(old), dict(new)
    old_config, new_config = old.pop("config", None), new.pop("config", None)
    if old != new:
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        raise ValueError(f"{flag}: {path} was made with other settings (was, now: {diff}); "
                         f"use another {flag} or remove that {what}")
    changed = _config_changes(old_config, new_config) if old_config and new_config else {}
    if changed:
        raise ValueError(f"{flag}: {path} was made with another config (was, now: {changed}), though with the same "
                         f"preset name and overrides: a preset or a default changed since; use another {flag} or "
                         f"remove that {what}")


def _config_changes(old: dict, new: dict) -> dict:
    """{dotted key: (was, now)} between two resolved run configs (config_to_dict form). The old one is rebuilt on
    today's defaults first, so a key added since with the value that keeps the old behaviour is no change."""
    from slotssm.config import config_from_dict, config_to_dict, flatten_dict
    from slotssm.tasks import get_task

    try:
        template = get_task(new["task"]).default_config(new["preset"], new["model_name"])
        old = config_to_dict(config_from_dict(old, template))
    except (ValueError, KeyError) as err:
        return {"config": (str(err)[:200], "a config of today's keys")}
    a, b = flatten_dict(old), flatten_dict(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


RUNS_DIR = "<runs-dir>"  # stands for --runs-dir in a run's settings: records made elsewhere still match


def _run_settings(exp, args, root, variant, model, seed, pre, steps) -> tuple[list[str], dict]:
    """The `--set` overrides of one run, and its settings (what must match for a record or run to be reused)."""
    sets = list(exp.overrides) + list(args.overrides) + list(exp.variants[variant]) + [
        f"train.steps={steps}", f"train.seed={seed}", f"train.ckpt_every={CKPT_EVERY}"]
    if pre:
        sets += list(exp.pretrain[variant])
    elif variant in exp.pretrain:
        sets.append(f"train.init_from={_run_dir(root, variant, model, seed, True)}")
    final_steps = int([s for s in sets if s.startswith("train.steps=")][-1].split("=", 1)[1])
    here = str(root.parent)
    init = f"train.init_from={here}"
    shown = [RUNS_DIR.join(s.split(here, 1)) if s.startswith(init) else s for s in sets]
    return sets, {"preset": args.preset, "sets": shown, "steps": final_steps,
                  "config": _resolved_config(exp, args.preset, model, sets, here)}


def _resolved_config(exp, preset: str, model: str, sets: list[str], here: str) -> dict:
    """The whole config a run trains with (config_to_dict form): what its preset and overrides make of it today,
    so a record made before a preset changed is not taken for a run of the new one. The pre-training's path
    under --runs-dir (`here`) is written with the placeholder, the checkpoint cadence as CKPT_EVERY."""
    from slotssm.config import apply_overrides, config_to_dict
    from slotssm.tasks import get_task

    d = config_to_dict(apply_overrides(get_task(exp.task).default_config(preset, model), sets))
    d["train"]["ckpt_every"] = CKPT_EVERY
    if d["train"]["init_from"].startswith(here):
        d["train"]["init_from"] = RUNS_DIR.join(d["train"]["init_from"].split(here, 1))
    return d


def run_states(exp, args, root, steps) -> list[tuple[tuple, str]]:
    """[(run, state)] for every run of the plan: "recorded", "finished (recorded at the next call)", "stopped at
    step N (resumes there)", "to run", or "other settings: ..." for a record or run directory that would be
    refused."""
    out = []
    for p in _plan(exp, args.seeds):
        run, record = _run_dir(root, *p), _record_path(args, *p)
        _, settings = _run_settings(exp, args, root, *p, steps)
        try:
            if _from_record(args, root, p, settings):
                state = "recorded"
            else:
                _check_reuse(run, settings)
                if (run / "eval.json").exists():
                    state = "finished (recorded at the next call)"
                elif _begun(run):
                    state = f"stopped at {_stopped_at(run)} (resumes there)"
                else:
                    state = "to run"
        except ValueError as err:
            state = f"other settings: {err}"
        out.append((p, state))
    return out


def _train(exp, args, root, variant, model, seed, pre, steps, deadline: float | None = None) -> dict | None:
    """Train one run (or take it from its record or its finished run directory): {"metrics", "run_s"}; None when
    it was not started because `deadline` (a `time.perf_counter()` value) has passed or its pre-training did not
    run. A fine-tuning whose pre-training has finished starts even after the deadline: the pre-trained weights live
    only in the run directory, which a sitting's end may take, so the pair is finished while they are there."""
    run = _run_dir(root, variant, model, seed, pre)
    sets, settings = _run_settings(exp, args, root, variant, model, seed, pre, steps)
    record = _record_path(args, variant, model, seed, pre)
    if _from_record(args, root, (variant, model, seed, pre), settings):
        saved = json.loads(record.read_text())
        return {"metrics": saved["metrics"], "run_s": saved["run_s"]}
    _check_reuse(run, settings)
    if (run / "eval.json").exists():
        return _write_record(args, record, run, settings)
    weights_waiting = variant in exp.pretrain and not pre and _pretraining_done(root, (variant, model, seed, pre))
    if deadline is not None and time.perf_counter() >= deadline and not weights_waiting:
        return None  # a fine-tuning whose pre-training is done still starts: its weights are in no record
    if variant in exp.pretrain and not pre and not weights_waiting:
        return None  # its pre-training was not started (the deadline)
    cmd = [sys.executable, "-m", "slotssm", "train", exp.task, "--model", model, "--preset", args.preset,
           "--out", str(run), "--data-dir", args.data_dir, "--no-progress"] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run.mkdir(parents=True, exist_ok=True)
    (run / "reproduce.json").write_text(json.dumps(settings))
    (run / "commit.txt").write_text(_commit())  # the code the run was made with, for its record
    with open(run / "train.log", "w") as log:
        resume = ["--resume"] if _begun(run) else []
        code = subprocess.call(cmd + resume, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RunFailed(f"exit code {code}; see {run / 'train.log'}")
    return {**_write_record(args, record, run, settings), "trained": True}


class RunFailed(RuntimeError):
    """A training subprocess exited with an error (its train.log says why)."""


def _records_root(args) -> Path:
    return Path(args.records_dir) if args.records_dir else Path(args.results_dir) / f"{args.experiment}_runs"


def _record_path(args, variant: str, model: str, seed: int, pre: bool) -> Path:
    """A run's record: VARIANT/MODEL[-pretrain]/seedK.json under the records directory."""
    return _run_dir(_records_root(args), variant, model, seed, pre).with_suffix(".json")


def _recorded(record: Path, settings: dict) -> bool:
    """True when `record` exists and was made with `settings`; a record made with other settings is refused."""
    if not record.exists():
        return False
    _refuse_other_settings(_results_settings(json.loads(record.read_text())["settings"]), _results_settings(settings),
                           "--records-dir", record, "record")
    return True


def _from_record(args, root: Path, p: tuple, settings: dict) -> bool:
    """True when run `p` = (variant, model, seed, pre) is taken from its record; a pre-training only when its weights
    are not needed again (its fine-tuning has a record) or are still here (its run directory is finished)."""
    variant, model, seed, pre = p
    if not _recorded(_record_path(args, *p), settings):
        return False
    finetuning = _record_path(args, variant, model, seed, False)
    return not pre or (_run_dir(root, *p) / "eval.json").exists() or finetuning.exists()


def _commit() -> str:
    """The commit of the checkout this runs from, "-dirty" when it has uncommitted changes ("unknown" outside a
    git checkout)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_record(args, record: Path, run: Path, settings: dict) -> dict:
    """Write a finished run's record (atomically) and, for a seed-0 run that is not a pre-training, its picture;
    return {"metrics", "run_s"}."""
    record.parent.mkdir(parents=True, exist_ok=True)
    seed0 = record.stem == "seed0" and not record.parent.name.endswith("-pretrain")
    picture = record.with_suffix(".png") if seed0 else None
    if picture is not None and not _slot_picture(args, run, picture):
        picture = None  # the task has no slot picture
    data = {"settings": settings, "metrics": _eval_record(run), "run_s": _run_seconds(run),
            "commit": (run / "commit.txt").read_text() if (run / "commit.txt").exists() else _commit(),
            **({"picture": picture.name} if picture is not None else {})}
    tmp = record.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, record)
    return {"metrics": data["metrics"], "run_s": data["run_s"]}


def _eval_record(run: Path) -> dict:
    """A finished run's metrics, with its training-health summary as `health/<name>` entries (when it has one)."""
    record = json.loads((run / "eval.json").read_text())
    health = {f"health/{k}": v for k, v in record.get("health", {}).items() if isinstance(v, (int, float))}
    return {**record["metrics"], **health}


def _pretraining_done(root: Path, p: tuple) -> bool:
    """True when the pre-training of run `p` = (variant, model, seed, pre) has finished in `root` (its weights are
    there for the fine-tuning)."""
    return (_run_dir(root, *p[:3], True) / "eval.json").exists()


def _next_run(pending: list[tuple], running, root: Path) -> tuple | None:
    """The run to start next, of `pending` (in plan order), or None while every pending run waits for a running one.

    A fine-tuning waits for its pre-training (it reads its weights). First come the runs that finish work already
    begun, because what a sitting leaves unfinished is lost with its run directories, while a record is kept: a
    fine-tuning whose pre-training is done (the pre-trained weights are not in the record), then a run stopped
    mid-way (it resumes from its checkpoint). Then the rest in plan order."""
    waiting = {q for q in pending if q[3]} | {q for q in running if q[3]}

    def ready(p):
        return p[3] or (p[0], p[1], p[2], True) not in waiting

    def begun(p):
        if not p[3] and _pretraining_done(root, p):
            return 0
        return 1 if _begun(_run_dir(root, *p)) else 2

    candidates = [p for p in pending if ready(p)]
    return min(candidates, key=lambda p: (begun(p), pending.index(p))) if candidates else None


def _run_name(p: tuple) -> str:
    variant, model, seed, pre = p
    return f"{variant or '-'} {model}{' (pre-training)' if pre else ''} seed {seed}"


def progress_line(exp: Experiment, p: tuple, metrics: dict, run_s: float, done: int, total: int,
                  trained_s: list[float], jobs: int) -> str:
    """One line per finished run: count, variant, model, seed, the headline metric, the run's minutes and an ETA:
    the mean minutes of the runs trained so far by this call (`trained_s`; runs taken from a record or a finished
    run directory cost nothing and say nothing about the rest), times the runs left, over `jobs` in parallel."""
    head = exp.metrics[0]
    value = f"{head} {metrics[head]:.4f}" if (not p[3] and head in metrics) else "pre-training done"
    left = total - done
    if not left:
        eta = "done"
    elif trained_s:
        eta = f"ETA {sum(trained_s) / len(trained_s) * left / min(jobs, left) / 60:.0f} min"
    else:
        eta = "ETA unknown until a run is trained"
    return f"  [{done}/{total}] {_run_name(p)}: {value} ({run_s / 60:.1f} min); {eta}"


def _run_seconds(run: Path) -> float:
    """Wall time of one finished run: from its config (written first; its first curriculum stage's, when it has
    stages) to its evaluation (written last)."""
    configs = [run / "config.json", *(run / "stages").glob("stage*/config.json")]
    return (run / "eval.json").stat().st_mtime - min(p.stat().st_mtime for p in configs if p.exists())


def _begun(run: Path) -> bool:
    """True when run directory `run` holds a run stopped mid-way: a checkpoint, or curriculum stages begun."""
    return (run / "ckpt-latest").exists() or (run / "stages").is_dir()


def _stopped_at(run: Path) -> str:
    """Where a run stopped mid-way stands: "step N", or "stage I, step S" inside a curriculum."""
    ckpt = run / "ckpt-latest" / "checkpoint.json"
    if ckpt.exists():
        return f"step {json.loads(ckpt.read_text()).get('step', '?')}"
    stages = sorted((run / "stages").glob("stage*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0)
    for d in stages:
        if not (d / "eval.json").exists():
            stage_ckpt = d / "ckpt-latest" / "checkpoint.json"
            step = json.loads(stage_ckpt.read_text()).get("step", "?") if stage_ckpt.exists() else 0
            return f"stage {d.name[5:]}, step {step}"
    return "the end of its stages"


def references(exp: Experiment, args) -> dict:
    """{variant: {reference name: metrics}}: the task's model-free answers on each variant's validation split."""
    from slotssm.tasks import get_task
    from slotssm.train.config import apply_overrides

    cls, out = get_task(exp.task), {}
    for variant, extra in exp.variants.items():
        sets = list(exp.overrides) + list(args.overrides) + list(extra)
        task = cls(apply_overrides(cls.default_config(args.preset, exp.models[0]), sets), args.data_dir)
        out[variant] = task.reference_metrics(task.datasets()[1])
    return out


SLOT_PICTURES = ("slot_masks.png", "slot_attention.png", "slot_attention_0.png")  # by preference, as tasks write them


def _slot_picture(args, run: Path, dest: Path) -> bool:
    """Write the slot masks or decoder slot attention of finished run `run` on held-out videos (paper App. D.1)
    to `dest`; False for a task without such a picture (a classifier)."""
    import shutil
    import tempfile

    import torch

    from slotssm.train.checkpoint import load_model_from_run

    task, model, _ = load_model_from_run(run, "cpu", data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        written = {Path(p).name: Path(p) for p in
                   task.visualise(model.eval(), task.datasets()[1], Path(tmp), device=torch.device("cpu"))}
        pick = next((written[n] for n in SLOT_PICTURES if n in written), None)
        if pick is None:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pick, dest)
    return True


def slot_pictures(exp: Experiment, args, results_dir: Path) -> dict[str, dict[str, str]]:
    """{variant: {model: path relative to results_dir}}: each model's picture from its seed-0 run's record (copied
    to results_dir/EXPERIMENT_slots/ when the records lie elsewhere); models whose task has no such picture give
    none."""
    import shutil

    out: dict[str, dict[str, str]] = {}
    for variant in exp.variants:
        for model_name in exp.models:
            record = _record_path(args, variant, model_name, 0, False)
            name = json.loads(record.read_text()).get("picture") if record.exists() else None
            if not name:
                continue
            picture = (record.parent / name).resolve()
            if not picture.is_relative_to(results_dir.resolve()):
                dest = results_dir / f"{args.experiment}_slots" / f"{_variant_label(variant)}-{model_name}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(picture, dest)
                picture = dest.resolve()
            out.setdefault(variant, {})[model_name] = picture.relative_to(results_dir.resolve()).as_posix()
    return out


def run_reproduce(args) -> int:
    exp = EXPERIMENTS[args.experiment]
    root = Path(args.runs_dir) / args.experiment
    plan = _plan(exp, args.seeds)
    steps = args.steps
    if args.plan:
        if not steps:
            raise ValueError("--plan: give --steps too (the step count is part of every run's settings)")
        states = run_states(exp, args, root, steps)
        for (variant, model, seed, pre), state in states:
            print(f"  {variant or '-'} {model}{' (pre-training)' if pre else ''} seed {seed}: {state}")
        print(f"{args.experiment}: {sum(st == 'recorded' for _, st in states)} of {len(states)} runs recorded "
              f"in {_records_root(args)}")
        return 0
    if not steps:
        # Generate the data of every variant first (not part of the budget), then time each model.
        per_step = {}
        for variant, extra in exp.variants.items():
            sec = calibrate(exp, args.data_dir, list(exp.overrides) + list(args.overrides) + list(extra), args.preset)
            per_step.update({(variant, m): s for m, s in sec.items()})
        total = sum(per_step[(v, m)][0] for v, m, _, _ in plan)  # seconds for one step of every run
        fixed = sum(per_step[(v, m)][1] for v, m, _, _ in plan)  # seconds of every run's curriculum stages
        steps = max(20, int((args.budget_minutes * 60 * args.jobs * 0.9 - fixed) / total))
        print(f"calibration: {json.dumps({f'{v} {m}': round(s[0], 3) for (v, m), s in per_step.items()})}"
              + (f"; curriculum stages {fixed / 60 / args.jobs:.0f} min" if fixed else ""))
    print(f"{args.experiment}: {len(plan)} runs x {steps} steps, {args.jobs} in parallel")
    results, run_s = {}, {}
    started, done, trained, failed = time.perf_counter(), 0, [], []
    deadline = started + args.stop_after_minutes * 60 if args.stop_after_minutes > 0 else None
    pending, running = list(plan), {}
    with ThreadPoolExecutor(args.jobs) as pool:
        while pending or running:
            while len(running) < args.jobs and (p := _next_run(pending, running.values(), root)) is not None:
                pending.remove(p)
                running[pool.submit(_train, exp, args, root, *p, steps, deadline)] = p
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                p = running.pop(f)
                try:
                    out = f.result()
                except RunFailed as err:  # reported now; the other runs go on and keep their progress lines
                    failed.append(p)
                    print(f"  failed: {_run_name(p)}: {err}", flush=True)
                    continue
                if out is None:
                    continue
                results[p], run_s[p] = out["metrics"], out["run_s"]
                done += 1
                if out.get("trained"):
                    trained.append(out["run_s"])
                print(progress_line(exp, p, results[p], run_s[p], done, len(plan), trained, args.jobs), flush=True)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(_run_name(p) for p in failed)}; the same command trains "
              f"them again ({len(results)} of {len(plan)} runs have a record in {_records_root(args)})")
        return 1
    if len(results) < len(plan):
        print(f"stopped after {args.stop_after_minutes:g} min: {len(results)} of {len(plan)} runs have a record in "
              f"{_records_root(args)}; the same command continues (the page is written when every run has one)")
        return 0
    from slotssm.results import write_results

    commits = sorted({json.loads(_record_path(args, *p).read_text()).get("commit", "unknown") for p in plan})
    page = write_results(args.experiment, exp, results, steps, sum(run_s.values()), Path(args.results_dir),
                         args.preset, tuple(exp.overrides) + tuple(args.overrides),
                         references=references(exp, args),
                         pictures=slot_pictures(exp, args, Path(args.results_dir)), commits=tuple(commits))
    print(f"results: {page}")
    return 0
