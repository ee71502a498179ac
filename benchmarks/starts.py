"""Before/after the model-start fixes: loss, slot cosine and input sensitivity over the same steps, same seed.

    python benchmarks/starts.py --code /path/to/other/checkout --task object_centric --model oc_slotssm \
        --steps 500 --probe-every 50 --out before.json
    python benchmarks/starts.py --task object_centric --model oc_slotssm --steps 500 --probe-every 50 --out after.json

`--code DIR` runs the `slotssm` package of another checkout (DIR/src), e.g. an older commit made with
`git worktree add`; without it, this checkout's. The loop is written out here, not the project's trainer, so that
both versions train through the same code: the task's `small` preset (optionally `--set` overrides), AdamW from
the version's own `build_optimizer` (so its weight-decay rule is part of what is compared), warmup + cosine,
gradient clipping, batches drawn from one seeded permutation. The probes are this checkout's
`slotssm/train/health.py` (loaded by file, it imports only torch) on a fixed batch of 8 validation videos: slots
from `model.seq(model.encoder(frames))`, so only tasks whose model has that shape (video_prediction,
object_centric, snitch_localization) are supported. At the end the task's own evaluation runs on the validation
videos. Writes JSON: the config, the curve ({step, loss, slot_cosine, slot_sensitivity, pred_sensitivity,
encoder_entropy}) and the final metrics. One thread (OMP_NUM_THREADS=1) by default.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _load_health():
    spec = importlib.util.spec_from_file_location("_health", HERE / "src" / "slotssm" / "train" / "health.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frames_and_prediction(task_name: str, task, model, batch):
    """(slots, encoder attention | None, prediction) for the probes, the same way in either version."""
    import torch
    from slotssm.tasks.model import to_float_frames

    if task_name == "video_prediction":
        frames = to_float_frames(batch["frames"])[:, :-1]
    elif task_name == "object_centric":
        frames = to_float_frames(batch["video"])
    else:
        frames = task.sample_frames(batch["video"], train=False)
    out = model.seq(model.encoder(frames), return_attention=True)
    slots = out.slots
    if task_name == "video_prediction":
        patches, _ = model.head(slots)
        pred = torch.sigmoid(patches)
    elif task_name == "object_centric" or task.config.data.objective == "reconstruct":
        pred = model.head(slots)[0]
    else:
        pred = model.head(slots[:, -1])
    return slots, (out.attention or {}).get("encoder"), pred


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--code", default=None, help="checkout whose src/ to run (default: this one)")
    p.add_argument("--task", default="object_centric", choices=["video_prediction", "object_centric",
                                                                "snitch_localization"])
    p.add_argument("--model", default="oc_slotssm")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--probe-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.code:
        sys.path.insert(0, str(Path(args.code).resolve() / "src"))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import slotssm
    from slotssm.tasks import get_task
    from slotssm.train.config import apply_overrides
    from slotssm.train.optim import build_optimizer
    from slotssm.train.schedule import build_scheduler

    health = _load_health()
    task_cls = get_task(args.task)
    config = apply_overrides(task_cls.default_config(args.preset, args.model),
                             [f"train.steps={args.steps}", f"train.seed={args.seed}", *args.overrides])
    torch.manual_seed(args.seed)
    task = task_cls(config, args.data_dir)
    model = task.build_model()
    train_set, val_set = task.datasets()
    optim_cfg = config.train.optim
    opt = build_optimizer(model, optim_cfg)
    sched = build_scheduler(opt, optim_cfg, args.steps)
    bsz = config.train.batch_size
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.cat([torch.randperm(len(train_set), generator=gen)
                       for _ in range(math.ceil(args.steps * bsz / len(train_set)) + 1)])
    probe_batch = task.collate([val_set[i] for i in range(min(8, len(val_set)))])

    def probe(step, loss):
        model.eval()
        with torch.no_grad():
            slots, enc, pred = _frames_and_prediction(args.task, task, model, probe_batch)
        model.train()
        row = {"step": step, "loss": loss, "slot_cosine": health.slot_cosine(slots),
               "slot_sensitivity": health.input_sensitivity(slots), "pred_sensitivity": health.input_sensitivity(pred),
               "encoder_entropy": health.attention_entropy(enc, -2) if enc is not None else float("nan")}
        print(json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        return row

    curve, window, start = [probe(0, float("nan"))], [], time.perf_counter()
    model.train()
    for step in range(args.steps):
        idx = order[step * bsz:(step + 1) * bsz].tolist()
        loss, _ = task.loss(model, task.collate([train_set[i] for i in idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optim_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim_cfg.grad_clip)
        opt.step()
        sched.step()
        window.append(loss.item())
        if (step + 1) % args.probe_every == 0 or step + 1 == args.steps:
            curve.append(probe(step + 1, sum(window) / len(window)))
            window = []
    train_s = time.perf_counter() - start
    final = {}
    if not args.no_eval:
        model.eval()
        with torch.no_grad():
            final = task.evaluate(model, val_set, batch_size=config.train.eval_batch_size, device=torch.device("cpu"))
        final = {k: float(v) for k, v in final.items() if not k.startswith("mse_step_")}
        print(json.dumps(final), flush=True)
    record = {"code": str(Path(slotssm.__file__).resolve().parents[1]), "task": args.task, "model": args.model,
              "preset": args.preset, "steps": args.steps, "seed": args.seed, "overrides": args.overrides,
              "train_seconds": train_s, "curve": curve, "final": final}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
