"""Training steps per second of every model on every task preset (forward + backward + AdamW on a real batch).

    python benchmarks/train_throughput.py                       # all tasks x the paper's models, `small` preset
    python benchmarks/train_throughput.py --tasks blinking_balls --models slotssm rim --preset small
Writes benchmarks/results/train_throughput.json; prints a table of steps/s and the ratio to SlotSSM.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    import torch

    from slotssm.models import list_models
    from slotssm.reproduce import calibrate_config
    from slotssm.tasks import get_task, list_tasks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list_tasks())
    p.add_argument("--models", nargs="+", default=list_models())
    p.add_argument("--preset", default="small")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for task in args.tasks:
        for model in args.models:
            cfg = get_task(task).default_config(args.preset, model)
            sec = calibrate_config(cfg, args.data_dir)
            rows.append({"task": task, "model": model, "preset": args.preset, "batch": cfg.train.batch_size,
                         "seconds_per_step": sec, "steps_per_s": 1 / sec})
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_throughput.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'task':>20} {'model':>22} {'batch':>6} {'steps/s':>8} {'vs slotssm':>10}")
    for r in rows:
        ref = next((q for q in rows if q["task"] == r["task"] and q["model"] == "slotssm"), None)
        ratio = r["steps_per_s"] / ref["steps_per_s"] if ref else float("nan")
        print(f"{r['task']:>20} {r['model']:>22} {r['batch']:>6} {r['steps_per_s']:>8.2f} {ratio:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
