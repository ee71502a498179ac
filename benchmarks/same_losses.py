"""Same seed, same losses: a few training steps of every model on every task at the `tiny` preset.

    python benchmarks/same_losses.py --out before.json          # on one version of the code (PYTHONPATH=...)
    python benchmarks/same_losses.py --out after.json --compare before.json

For each (task, model) it seeds torch, builds the task's model, takes the first batches of the training split
in order and runs `--steps` AdamW steps on `task.loss`, recording every loss, the state-dict keys and shapes
(checkpoint compatibility) and the sum of the initial parameters. `--compare` fails (exit 1) on any difference
beyond float tolerance or any changed key. It uses only the task interface (get_task, default_config,
build_model, datasets, collate, loss), so it runs unchanged on versions before and after a refactoring.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch


def run_one(task_name: str, model_name: str, data_dir: Path, steps: int) -> dict:
    from slotssm.models import list_models  # noqa: F401  (fails early if the package is not importable)
    from slotssm.tasks.registry import get_task

    cls = get_task(task_name)
    cfg = cls.default_config("tiny", model_name)
    task = cls(cfg, data_dir)
    torch.manual_seed(0)
    model = task.build_model()
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    init_sum = float(sum(p.detach().double().sum() for p in model.parameters()))
    train_set, _ = task.datasets()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bs, losses = 2, []
    torch.manual_seed(1)
    for step in range(steps):
        items = [train_set[(step * bs + i) % len(train_set)] for i in range(bs)]
        loss, _ = task.loss(model, task.collate(items))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return {"losses": losses, "init_sum": init_sum, "keys": keys}


def compare(before: dict, after: dict, rtol: float = 1e-5) -> list[str]:
    problems = []
    for name in sorted(set(before) | set(after)):
        if name not in before or name not in after:
            problems.append(f"{name}: only in {'after' if name in after else 'before'}")
            continue
        b, a = before[name], after[name]
        if b["keys"] != a["keys"]:
            gone, new = sorted(set(b["keys"]) - set(a["keys"])), sorted(set(a["keys"]) - set(b["keys"]))
            problems.append(f"{name}: state-dict keys differ: removed {gone[:5]}, added {new[:5]}")
        if not math.isclose(b["init_sum"], a["init_sum"], rel_tol=rtol, abs_tol=1e-6):
            problems.append(f"{name}: initial parameters differ ({b['init_sum']} vs {a['init_sum']})")
        for i, (lb, la) in enumerate(zip(b["losses"], a["losses"])):
            if not math.isclose(lb, la, rel_tol=rtol, abs_tol=1e-7):
                problems.append(f"{name}: step {i} loss {lb!r} vs {la!r}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data-dir", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from slotssm.models import list_models
    from slotssm.tasks.registry import list_tasks

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="same_losses_"))
    results = {}
    for task_name in list_tasks():
        for model_name in list_models():
            results[f"{task_name}/{model_name}"] = run_one(task_name, model_name, data_dir, args.steps)
            print(f"{task_name}/{model_name}: {results[f'{task_name}/{model_name}']['losses']}", flush=True)
    args.out.write_text(json.dumps(results, indent=1))
    if args.compare:
        problems = compare(json.loads(args.compare.read_text()), results)
        print("\n".join(problems) if problems else f"identical: {len(results)} (task, model) pairs, "
              f"{args.steps} steps each, losses within rel 1e-5, same state-dict keys and shapes")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
