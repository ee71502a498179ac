"""Scan speed and memory: every Mamba1 selective-scan path, Mamba2's SSD at the same width, and mambapy's pscan.

Legend: B' batch (x slots), E channels, N state size, T time, H heads, P head width (H P = E).

Paths (all with delta_bias + softplus, D skip and z gate, so they compute the same function):
  ref, loop, chunked, fused   selective_scan(impl=...) at B'=48, E=80, N=16 (ref only for T <= 320: it is slow)
  fused_core                  the fused kernel with bias/softplus/skip/gate left to autograd outside (what fusing buys)
  mambapy                     mambapy.pscan on deltaA = exp(dt A), BX = dt B u built as (B', T, E, N) as mambapy's
                              selective_scan does (that cost included); T zero-padded (dt = 0) to a power of two
  ssd_chunked, ssd_fused      ssd_scan at H=5, P=16, N=16 (Mamba2 of the same width)

Every path is first checked against ref (T <= 320) or loop at B'=2; then each (path, T, malloc setting) runs in a
fresh process: warm-up, median of --repeats, forward and forward+backward, peak resident memory above the process's
level before the first call (a sampler thread reads VmRSS every millisecond). Two bounds of this machine are measured
too (copy bandwidth of a large tensor, torch.exp throughput); each Mamba1 path is set against them: the op's input and
output bytes at copy speed, and B'.E.N.T exponentials per pass (one forward, two forward+backward) at exp speed.

    python benchmarks/scan.py                       # T in 80 320 1280 2560, default and tuned malloc
    python benchmarks/scan.py --quick               # a smoke run in one process (~10 s): available paths, T=80
    python benchmarks/scan.py --T 2560 --repeats 5 --paths fused loop mambapy
Writes benchmarks/results/scan.json and scan.png; prints a table with ratios vs mambapy and vs the best pure-PyTorch path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import RESULTS, PeakRSS  # noqa: E402

BSZ, E, N, H, P = 48, 80, 16, 5, 16
PATHS = ("ref", "loop", "chunked", "fused", "fused_core", "mambapy", "ssd_chunked", "ssd_fused")
PURE_TORCH = ("ref", "loop", "chunked")  # the pure-PyTorch Mamba1 paths of this library
REF_MAX_T = 320


def make_inputs(path: str, bsz: int, t: int, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if path.startswith("ssd"):
        return dict(x=r(bsz, t, H, P), dt=0.5 * r(bsz, t, H), A=-torch.rand(H, generator=g) - 0.5,
                    B=r(bsz, t, 1, N), C=r(bsz, t, 1, N), D=r(H), z=r(bsz, t, H, P), dt_bias=0.3 * r(H))
    inp = dict(u=r(bsz, E, t), delta=0.5 * r(bsz, E, t), A=-torch.rand(E, N, generator=g) * 2 - 0.1,
               B=r(bsz, N, t), C=r(bsz, N, t), D=r(E), z=r(bsz, E, t), delta_bias=0.3 * r(E))
    if path == "mambapy":  # mambapy's own layout (B', T, E) and (B', T, N): given to it, not converted per call
        inp = {k: (v.transpose(1, 2).contiguous() if v.dim() == 3 else v) for k, v in inp.items()}
    return inp


def run_path(path: str, inp: dict):
    """Forward of `path`: y as (B', E, T) (Mamba1) or (B', T, H, P) (SSD)."""
    import torch.nn.functional as F

    from slotssm.ssm import selective_scan, ssd_scan

    if path.startswith("ssd"):
        return ssd_scan(**inp, dt_softplus=True, chunk_size=64, impl=path[4:])
    if path == "mambapy":
        return mambapy_scan(**inp).transpose(1, 2)
    if path == "fused_core":
        from slotssm.ssm.fused import fused_selective_scan

        dt = F.softplus(inp["delta"] + inp["delta_bias"][:, None])
        y, _ = fused_selective_scan(inp["u"], dt, inp["A"], inp["B"], inp["C"])
        return (y + inp["u"] * inp["D"][:, None]) * F.silu(inp["z"])
    return selective_scan(**inp, delta_softplus=True, impl=path)


def mambapy_scan(u, delta, A, B, C, D, z, delta_bias):
    """mambapy's selective_scan (MambaBlock.selective_scan) + our bias/softplus and gate; (B', T, E) layout."""
    import torch
    import torch.nn.functional as F
    from mambapy.pscan import pscan

    t = u.shape[1]
    pad = 2 ** math.ceil(math.log2(t)) - t  # pscan needs a power-of-two T: dt = 0 leaves the state unchanged
    dt = F.pad(F.softplus(delta + delta_bias), (0, 0, 0, pad))
    up, Bp, Cp = (F.pad(v, (0, 0, 0, pad)) for v in (u, B, C))
    deltaA = torch.exp(dt.unsqueeze(-1) * A)  # (B', T, E, N)
    BX = dt.unsqueeze(-1) * Bp.unsqueeze(2) * up.unsqueeze(-1)  # (B', T, E, N)
    hs = pscan(deltaA, BX)
    y = (hs @ Cp.unsqueeze(-1)).squeeze(3)[:, :t]  # (B', T, E)
    return (y + D * u) * F.silu(z)


def check_paths(paths, lengths) -> dict:
    """Values and gradients of every path against ref (T <= 320) or loop, at B'=2: max relative error."""
    import torch

    errors = {}
    for t in lengths:
        small = t <= REF_MAX_T
        for path in paths:
            ref_path = ("ssd_ref" if small else "ssd_chunked") if path.startswith("ssd") else "ref" if small else "loop"
            if path in (ref_path, "ref"):
                continue
            outs = []
            for p in (ref_path, path):
                leaves = {k: v.requires_grad_() for k, v in make_inputs(p, 2, t).items()}
                y = run_path(p, leaves)
                w = torch.linspace(-1, 1, y.numel()).view_as(y)
                grads = torch.autograd.grad((y * w).sum(), list(leaves.values()))
                if p == "mambapy":  # back to (B', E, T) / (B', N, T)
                    grads = [gr.transpose(1, 2) if gr.dim() == 3 else gr for gr in grads]
                outs.append([v.detach() for v in (y, *grads)])
            err = max(float((a - b).abs().max() / a.abs().max().clamp(min=1e-6)) for a, b in zip(*outs))
            errors[f"{path}@{t}"] = err
            if not err <= 1e-4:
                raise SystemExit(f"check failed: {path} at T={t} differs from {ref_path} by {err:.2e} (relative)")
    return errors


def worker(path: str, t: int, repeats: int, tuned: bool, threads: int) -> dict:
    """In a fresh process: time and peak memory of one path at one length."""
    import torch

    from slotssm.malloc import tune_malloc

    if tuned:
        tune_malloc(True)
    torch.set_num_threads(threads)
    small = {k: v.requires_grad_() for k, v in make_inputs(path, 2, 16).items()}
    run_path(path, small).sum().backward()  # imports, kernel cache loads, lazy inits: not counted below
    inp = {k: v.requires_grad_() for k, v in make_inputs(path, BSZ, t).items()}
    dy = torch.randn(BSZ, t, H, P) if path.startswith("ssd") else torch.randn(BSZ, E, t)
    row = {"path": path, "T": t, "malloc": "tuned" if tuned else "default", "threads": threads}
    with PeakRSS() as mem:
        fwd = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            y = run_path(path, inp)
            fwd.append(time.perf_counter() - t0)
            del y
        row["fwd_peak_mb"] = (mem.peak - mem.base) / 2**20
        both = []
        for i in range(repeats + 1):
            for v in inp.values():
                v.grad = None
            t0 = time.perf_counter()
            run_path(path, inp).backward(dy)
            both.append(time.perf_counter() - t0)
    row["fwd_s"], row["fwdbwd_s"] = statistics.median(fwd[1:]), statistics.median(both[1:])
    row["fwdbwd_peak_mb"] = mem.rise / 2**20
    return row


def machine_bounds(threads: int) -> dict:
    """Copy bandwidth (bytes/s, read + write) of a 512 MiB tensor and torch.exp throughput (exps/s)."""
    import torch

    torch.set_num_threads(threads)
    src, dst = torch.randn(2**27), torch.empty(2**27)
    dst.copy_(src)
    copy = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
    x = torch.randn(2**24).clamp(max=0)
    out = torch.empty_like(x)
    torch.exp(x, out=out)
    exp = min(_timed(lambda: torch.exp(x, out=out)) for _ in range(5))
    from slotssm.ssm.fused import map_array

    xn, on = x.numpy(), out.numpy()
    map_array(0, xn, on)
    poly = min(_timed(lambda: map_array(0, xn, on)) for _ in range(5))
    return {"copy_bytes_per_s": 2 * src.numel() * 4 / copy, "torch_exp_per_s": x.numel() / exp,
            "fused_exp_per_s": x.numel() / poly}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def add_bounds(row: dict, bounds: dict) -> None:
    """Mamba1 rows: the op's I/O bytes at copy speed and its exponentials at torch.exp speed, and time / max(both)."""
    bet, bnt = BSZ * E * row["T"], BSZ * N * row["T"]
    for mode, io, n_exp in (("fwd", 4 * bet + 2 * bnt, bet * N), ("fwdbwd", 11 * bet + 6 * bnt, 2 * bet * N)):
        if row["path"].startswith("ssd"):
            io, n_exp = io, BSZ * H * row["T"] * (1 if mode == "fwd" else 2)
        t_mem, t_exp = 4 * io / bounds["copy_bytes_per_s"], n_exp / bounds["torch_exp_per_s"]
        row[f"{mode}_bound_s"] = max(t_mem, t_exp)
        row[f"{mode}_x_bound"] = row[f"{mode}_s"] / row[f"{mode}_bound_s"]


def print_table(rows: list[dict]) -> None:
    print(f"{'malloc':7} {'T':>5} {'path':12} {'fwd ms':>9} {'f+b ms':>9} {'f+b MB':>8} {'x bound':>8} "
          f"{'vs mambapy':>10} {'vs best torch':>13}")
    key = lambda r: (r["malloc"], r["T"])  # noqa: E731
    for (malloc, t) in sorted({key(r) for r in rows}):
        group = [r for r in rows if key(r) == (malloc, t) and "fwd_s" in r]
        peer = next((r for r in group if r["path"] == "mambapy"), None)
        best = min((r for r in group if r["path"] in PURE_TORCH), key=lambda r: r["fwdbwd_s"], default=None)
        for r in group:
            vs = lambda other: f"{other['fwdbwd_s'] / r['fwdbwd_s']:.2f}x" if other else "-"  # noqa: E731
            print(f"{malloc:7} {t:5d} {r['path']:12} {r['fwd_s'] * 1e3:9.1f} {r['fwdbwd_s'] * 1e3:9.1f} "
                  f"{r['fwdbwd_peak_mb']:8.0f} {r['fwdbwd_x_bound']:8.1f} {vs(peer):>10} {vs(best):>13}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({r["malloc"] for r in rows})
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4.5), squeeze=False)
    for ax, malloc in zip(axes[0], settings):
        for name in PATHS:
            pts = sorted((r["T"], r["fwdbwd_s"]) for r in rows if r["path"] == name and r["malloc"] == malloc and "fwdbwd_s" in r)
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=name)
        ax.set(title=f"forward+backward, malloc {malloc}", xlabel="T", ylabel="seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def model_step(impls, repeats: int, threads: int, batch: int = 8, t: int = 2560) -> list[dict]:
    """One training step (forward, backward, AdamW) of SlotSSM at the blinking_balls preset, 1 token per step,
    with every Mamba block's scan set to each impl in turn (same weights, same data)."""
    import torch

    from slotssm.models import build_model
    from slotssm.ssm import Mamba

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("slotssm", preset="blinking_balls")
    tokens = torch.randn(batch, t, 1, model.input_dim)  # (B, T, M=1, D_in)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = []
    for impl in impls:
        for mod in model.modules():
            if isinstance(mod, Mamba):
                mod.impl = impl
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            model(tokens).slots.pow(2).mean().backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        rows.append({"impl": impl, "step_s": statistics.median(times[1:]), "batch": batch, "T": t,
                     "scans": sum(isinstance(m, Mamba) for m in model.modules())})
        print(f"  training step, impl={impl}: {rows[-1]['step_s']:.2f} s (median of {repeats})", flush=True)
    return rows


def _available(path: str) -> str | None:
    """Why `path` cannot run here, or None."""
    import importlib.util

    from slotssm.ssm.kernels import has_numba

    if "fused" in path and not has_numba():
        return "numba is not installed"
    if path == "mambapy" and importlib.util.find_spec("mambapy") is None:
        return "mambapy is not installed"
    return None


def quick(paths, threads: int, out: str) -> None:
    """One process, T=80, one repeat: each available path checked against ref, then timed (the numbers are a smoke
    test, not a measurement: no fresh process per path, no malloc settings, no machine bounds)."""
    t0 = time.perf_counter()
    skipped = {p: why for p in paths if (why := _available(p))}
    paths = [p for p in paths if p not in skipped]
    errors = check_paths(paths, [80])
    print("checked against ref (max relative error):", {k: f"{v:.1e}" for k, v in errors.items()})
    rows = []
    for path in paths:
        rows.append(worker(path, 80, 1, False, threads))
        r = rows[-1]
        print(f"  T=80 {path:12} fwd {r['fwd_s'] * 1e3:8.1f} ms  fwd+bwd {r['fwdbwd_s'] * 1e3:8.1f} ms", flush=True)
    for path, why in skipped.items():
        print(f"  {path:17} skipped: {why}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}_quick.json").write_text(json.dumps({"rows": rows, "checks": errors, "skipped": skipped}, indent=1))
    print(f"quick run: {time.perf_counter() - t0:.1f} s; wrote {RESULTS / out}_quick.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[80, 320, 1280, 2560])
    ap.add_argument("--quick", action="store_true", help="a smoke run in one process: available paths at T=80, "
                    "one repeat, checked against ref; writes RESULTS/<out>_quick.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--malloc", nargs="+", default=["default", "tuned"], choices=["default", "tuned"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="scan")
    ap.add_argument("--model-step", nargs="*", metavar="IMPL", help="time a SlotSSM training step per scan impl "
                    "(default: loop fused) instead of the scan table")
    ap.add_argument("--worker", nargs=3, metavar=("PATH", "T", "MALLOC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        path, t, malloc = args.worker
        print(json.dumps(worker(path, int(t), args.repeats, malloc == "tuned", args.threads)))
        return
    if args.model_step is not None:
        from slotssm.malloc import tune_malloc

        if "tuned" in args.malloc:
            tune_malloc(True)
        rows = model_step(args.model_step or ["loop", "fused"], args.repeats, args.threads)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.out}_model_step.json").write_text(json.dumps(rows, indent=1))
        return
    if args.quick:
        quick(args.paths, args.threads, args.out)
        return
    lengths, mallocs = args.T, args.malloc
    errors = check_paths(args.paths, [t for t in lengths if t <= 320] + [t for t in lengths if t > 320][:1])
    print("checked against ref/loop (max relative error):", {k: f"{v:.1e}" for k, v in errors.items()})
    bounds = machine_bounds(args.threads)
    print("bounds:", {k: f"{v:.3g}" for k, v in bounds.items()})
    rows = []
    for malloc in mallocs:
        for t in sorted(lengths):
            for path in args.paths:
                if path == "ref" and t > REF_MAX_T:
                    continue
                cmd = [sys.executable, __file__, "--worker", path, str(t), malloc, "--repeats", str(args.repeats),
                       "--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                if proc.returncode != 0:
                    rows.append({"path": path, "T": t, "malloc": malloc, "error": proc.stderr.strip()[-300:]})
                    print(f"{path} T={t} {malloc}: failed: {rows[-1]['error']}", file=sys.stderr)
                    continue
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                add_bounds(rows[-1], bounds)
                r = rows[-1]
                print(f"  {malloc:7} T={t:5d} {path:12} fwd {r['fwd_s'] * 1e3:8.1f} ms  fwd+bwd {r['fwdbwd_s'] * 1e3:8.1f} ms"
                      f"  peak {r['fwdbwd_peak_mb']:7.0f} MB", flush=True)
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    meta = {"B'": BSZ, "E": E, "N": N, "H": H, "P": P, "threads": args.threads, "repeats": args.repeats,
            "load_avg": os.getloadavg(), "bounds": bounds, "checks": errors}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    plot(rows, RESULTS / f"{args.out}.png")
    print(f"wrote {RESULTS / args.out}.json and .png")


if __name__ == "__main__":
    main()
