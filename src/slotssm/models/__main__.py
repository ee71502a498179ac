"""Size and speed of every registered sequence model: `python -m slotssm.models [--preset paper_blinking] ...`.

Legend: B batch, T time, M tokens per frame, D_in token width.

For each model of `list_models()` (with the preset asked for: "tiny", a scale of `models/presets.py` or an old
dataset name such as "blinking_balls") it prints the parameter count, the latency of one parallel `forward` over T
frames and of one `step` (averaged over the T frames of a run, so a KV cache's growth is included), each the median
of `--repeats` timed runs after a warm-up on 4 frames, in inference mode with torch threads = the machine's cores
(or `--threads`). Inputs are random tokens (B, T, M, D_in).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from slotssm.models.base import run_steps
from slotssm.models.presets import resolve_preset
from slotssm.models.registry import build_model, count_parameters, list_models, list_presets


def _median_seconds(fn, warm_up, repeats: int) -> float:
    warm_up()  # kernel compilation, allocator; on a short input to keep the table quick
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, preset: str, batch: int = 8, tokens: int = 16, frames: int = 64, repeats: int = 3,
            device: str = "cpu") -> dict:
    """Parameters and latencies of model `name` at `preset` on random tokens (batch, frames, tokens, D_in).

    Returns {"name", "preset", "params", "forward_ms" (whole sequence), "step_ms" (per frame, mean over the run)}.
    """
    torch.manual_seed(0)
    model = build_model(name, preset=preset).to(device).eval()
    x = torch.randn(batch, frames, tokens, model.input_dim, device=device)
    short = x[:, : min(frames, 4)]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn):
        def run(inp=x):
            fn(inp)
            sync()
        return run

    fwd, steps = timed(model), timed(lambda inp: run_steps(model, inp))
    with torch.inference_mode():
        f = _median_seconds(fwd, lambda: fwd(short), repeats)
        s = _median_seconds(steps, lambda: steps(short), repeats)
    return dict(name=name, preset=preset, params=count_parameters(model), forward_ms=1e3 * f, step_ms=1e3 * s / frames)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m slotssm.models", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper_blinking", help="tiny, a scale (w64k6, paper_movi, ...) or an old name")
    p.add_argument("--batch", type=int, default=8, help="B")
    p.add_argument("--tokens", type=int, default=16, help="M, tokens per frame")
    p.add_argument("--T", type=int, default=64, help="frames")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (median) after a short warm-up")
    p.add_argument("--models", default="", help="comma-separated names (default: every registered model)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    for flag in ("batch", "tokens", "T", "repeats", "threads"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag}: expected >= 1, got {getattr(a, flag)}")
    names = list_models()
    if a.models:
        wanted = [n.strip() for n in a.models.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            p.error(f"--models: unknown {unknown}; known: {', '.join(names)}")
        names = wanted
    torch.set_num_threads(a.threads)
    print(f"B={a.batch} T={a.T} M={a.tokens} preset={a.preset} device={a.device} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}; median of {a.repeats} runs")
    print(f"{'model':<24} {'preset':<16} {'params':>10} {'forward ms':>11} {'step ms/frame':>14}")
    for name in names:
        if resolve_preset(a.preset) not in list_presets(name):
            print(f"{name:<24} {a.preset:<16} {'-':>10} {'(no such preset)':>26}")
            continue
        r = measure(name, a.preset, a.batch, a.tokens, a.T, a.repeats, a.device)
        row = f"{name:<24} {a.preset:<16} {r['params']:>10,} {r['forward_ms']:>11.1f} {r['step_ms']:>14.2f}"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
