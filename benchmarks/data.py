"""Videos per second of every data generator at its default (paper-sized) parameters.

    PYTHONPATH=src python benchmarks/data.py [--repeats 5] [--quick]

For each generator: one call checks determinism (the same bytes twice), one warms up, then the median of
`repeats` timed calls of a batch. Prints a table and writes benchmarks/results/data.json.
Generators are numpy (single-threaded), so the number is per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from slotssm.data import generate, get_spec, list_generators

# Videos per timed call: about a second of work each at default sizes.
BATCH = {"bouncing_balls": 200, "blinking_balls": 100, "shapes_video": 50, "snitch": 6}
EXTRA = {"shapes_video (variant b)": ("shapes_video", {"variant": "b"})}


def bench(name: str, params: dict, batch: int, repeats: int) -> dict:
    a = generate(name, 2, seed=123, **params)
    b = generate(name, 2, seed=123, **params)
    if any(a[k].tobytes() != b[k].tobytes() for k in a):
        raise RuntimeError(f"{name}: two calls with the same seed differ")
    generate(name, batch, seed=0, **params)  # warm-up (shape tables, caches)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = generate(name, batch, seed=r + 1, **params)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    nbytes = sum(v.nbytes for k, v in out.items() if k not in get_spec(name).static) / batch
    return {"videos_per_s": batch / median, "median_s": median, "batch": batch, "repeats": repeats,
            "mib_per_video": nbytes / 2**20, "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small batches, 2 repeats (smoke run)")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    cases = {name: (name, {}) for name in list_generators()} | EXTRA
    results = {}
    print(f"{'generator':<26}{'videos/s':>10}{'median s':>10}{'batch':>7}{'MiB/video':>11}")
    for label, (name, params) in cases.items():
        batch = max(2, BATCH[name] // 10) if args.quick else BATCH[name]
        r = bench(name, params, batch, repeats)
        results[label] = r
        print(f"{label:<26}{r['videos_per_s']:>10.1f}{r['median_s']:>10.3f}{r['batch']:>7}{r['mib_per_video']:>11.2f}")
    target = results["bouncing_balls"]["videos_per_s"]
    print(f"bouncing_balls 64x64x20: {target:.0f} videos/s (target >= 200: {'met' if target >= 200 else 'NOT met'})")
    out = Path(__file__).parent / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.machine(), "processor": platform.processor()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
