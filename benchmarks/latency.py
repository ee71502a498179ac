"""Inference latency and peak memory vs sequence length (paper Fig. 5b): parallel forward and step-by-step.

Models at the `blinking_balls` preset, batch 6, one token per step (the long-context task's setting) by default.
Each model runs in its own process (lengths ascending), so its peak resident memory is its own: a sampler thread
reads VmRSS every millisecond and reports the rise over the process's level before the call.

    python benchmarks/latency.py                      # 80 ... 2560, forward and step
    python benchmarks/latency.py --lengths 64 1024 --batch 8 --tokens 16 --models slotssm --out slotssm_steps
Writes benchmarks/results/<out>.json and .png; prints the SlotSSM / SlotTransformer ratio per length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Peak rise of resident memory during the block, sampled every millisecond."""

    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.rise = self.peak - self.base


def measure_model(name: str, args) -> list[dict]:
    """In this process: forward and step latency of `name` at every length (ascending)."""
    import torch

    from slotssm.models import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(name, preset=args.preset, input_dim=args.input_dim).eval()
    rows = []
    for t in sorted(args.lengths):
        x = torch.randn(args.batch, t, args.tokens, args.input_dim)
        row = {"model": name, "T": t}
        with torch.no_grad():
            model(x[:, : min(t, 16)])  # warm-up
            try:
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    model(x)
                    row["forward_s"] = time.perf_counter() - t0
                row["forward_peak_mb"] = mem.rise / 2**20
            except (RuntimeError, MemoryError) as err:  # out of memory: record it, go on with step mode
                row["forward_error"] = str(err)[:200]
            if t <= args.max_step_len:
                state = model.init_state(args.batch)
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    for x_t in x.unbind(1):
                        _, state = model.step(x_t, state)
                    row["step_total_s"] = time.perf_counter() - t0
                row["step_ms_per_frame"] = 1e3 * row["step_total_s"] / t
                row["step_peak_mb"] = mem.rise / 2**20
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        for ax, key in zip(axes, ("forward_s", "step_ms_per_frame", "forward_peak_mb")):
            pts = [(r["T"], r[key]) for r in mine if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
    for ax, title in zip(axes, ("parallel forward (s)", "step-by-step (ms per frame)", "forward peak memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["slotssm", "slot_transformer", "slot_rnn", "single_state_ssm"])
    p.add_argument("--lengths", nargs="+", type=int, default=[80, 160, 320, 640, 1280, 2560])
    p.add_argument("--max-step-len", type=int, default=1280, help="step mode only up to this length")
    p.add_argument("--preset", default="blinking_balls")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--tokens", type=int, default=1)
    p.add_argument("--input-dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="latency")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        measure_model(args.worker, args)
        return 0
    rows = []
    for name in args.models:  # one process per model: its memory is its own
        cmd = [sys.executable, __file__, "--worker", name] + [a for k, v in vars(args).items()
               if k not in ("worker", "models") for a in ([f"--{k.replace('_', '-')}"] + ([str(x) for x in v] if isinstance(v, list) else [str(v)]))]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    plot(rows, RESULTS / f"{args.out}.png")
    print(f"\n{'model':>18} {'T':>6} {'forward s':>10} {'step ms/frame':>14} {'fwd peak MB':>12}")
    for r in rows:
        print(f"{r['model']:>18} {r['T']:>6} {r.get('forward_s', float('nan')):>10.3f} "
              f"{r.get('step_ms_per_frame', float('nan')):>14.2f} {r.get('forward_peak_mb', float('nan')):>12.1f}")
    by = {(r["model"], r["T"]): r for r in rows}
    if {"slotssm", "slot_transformer"} <= set(args.models):
        print("\nSlotSSM / SlotTransformer (forward time, forward memory, step time):")
        for t in sorted(args.lengths):
            a, b = by.get(("slotssm", t), {}), by.get(("slot_transformer", t), {})
            ratio = lambda k: a[k] / b[k] if k in a and k in b and b[k] else float("nan")  # noqa: E731
            print(f"  T={t:>5}: {ratio('forward_s'):.2f}x  {ratio('forward_peak_mb'):.2f}x  {ratio('step_ms_per_frame'):.2f}x")
    print(f"wrote {RESULTS / (args.out + '.json')} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
