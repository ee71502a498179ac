"""GPU check: the CUDA paths that CPU tests cannot reach, run in a few minutes on one CUDA machine.

    python benchmarks/gpu_check.py [--out DIR] [--skip-ddp]

Checks, each a row of the final PASS / FAIL / SKIP table (exit code 1 if any fails):
  1. pytest -m gpu            tests/test_gpu.py: chunked scans on CUDA vs the reference (values, grads), mamba_ssm's
                              kernels when installed, autocast training steps of the SSM models
  2. mamba_ssm dispatch       impl="auto" on CUDA resolves to "cuda" when mamba_ssm is installed (else: says so),
                              and selective_scan / ssd_scan through it match impl="ref" (values and gradients)
  3. chunked scan on CUDA     selective_scan and ssd_scan impl="chunked" vs "ref" on CUDA at T=200 (values, grads)
  4. AMP training steps       every task's tiny preset, 3 steps under train.amp=bf16 and =fp16 on CUDA: finite loss,
                              a checkpoint written
  5. NCCL DDP                 torchrun --nproc_per_node 2 on the video_prediction tiny preset (needs 2 GPUs: one per
                              process; NCCL refuses two ranks on one device)
Writes DIR/gpu_check.json (default: a temporary directory). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_MODELS = {  # each task's headline model
    "video_prediction": "slotssm",
    "blinking_balls": "slotssm",
    "object_centric": "oc_slotssm",
    "snitch_localization": "slotssm",
}


def check_pytest(out: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(ROOT / "tests" / "test_gpu.py")],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    if proc.returncode != 0:
        raise AssertionError(f"pytest failed: {tail}\n{proc.stdout[-2000:]}")
    return tail


def _grads(fn, inp):
    import torch

    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    y = fn(**leaves)
    w = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    return [y.detach(), *torch.autograd.grad((y * w).sum(), list(leaves.values()))]


def _max_rel(got, want) -> float:
    return max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) for a, b in zip(got, want))


def _inputs(op: str, t: int):
    import torch

    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if op == "selective_scan":
        d = dict(u=r(4, 16, t), delta=0.5 * r(4, 16, t), A=-torch.rand(16, 8, generator=g) - 0.1, B=r(4, 8, t),
                 C=r(4, 8, t), D=r(16), z=r(4, 16, t), delta_bias=0.3 * r(16))
    else:
        d = dict(x=r(2, t, 4, 8), dt=0.5 * r(2, t, 4), A=-torch.rand(4, generator=g) - 0.1, B=r(2, t, 1, 8),
                 C=r(2, t, 1, 8), D=r(4), z=r(2, t, 4, 8), dt_bias=0.3 * r(4))
    return {k: v.cuda() for k, v in d.items()}


def _compare(impl: str, t: int, tol: float) -> str:
    from slotssm.ssm import selective_scan, ssd_scan

    errs = {}
    for op, fn, sp in (("selective_scan", selective_scan, "delta_softplus"), ("ssd_scan", ssd_scan, "dt_softplus")):
        inp = _inputs(op, t)
        ref = _grads(lambda **k: fn(**k, impl="ref", **{sp: True}), inp)
        got = _grads(lambda **k: fn(**k, impl=impl, **{sp: True}), inp)
        errs[op] = _max_rel(got, ref)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    if bad:
        raise AssertionError(f"impl={impl} vs ref: max relative error {bad} > {tol}")
    return ", ".join(f"{k} {v:.1e}" for k, v in errs.items())


def check_mamba_ssm(out: Path) -> str:
    import torch

    from slotssm.ssm.kernels import has_mamba_ssm, resolve_impl

    if not has_mamba_ssm():
        raise SkipCheck("mamba_ssm is not installed (pip install 'slotssm[cuda]'); impl='auto' uses 'chunked' on CUDA")
    for op in ("selective_scan", "ssd_scan"):
        chosen = resolve_impl(op, "auto", torch.device("cuda"))
        if chosen != "cuda":
            raise AssertionError(f"impl='auto' for {op} on CUDA resolved to {chosen!r}, expected 'cuda'")
    return "auto -> cuda; " + _compare("cuda", 200, 3e-3)


def check_chunked(out: Path) -> str:
    return _compare("chunked", 200, 1e-4)


def check_amp(out: Path) -> str:
    from slotssm.tasks.registry import get_task, list_tasks
    from slotssm.train.config import apply_overrides
    from slotssm.train.trainer import train

    done = []
    for task in list_tasks():
        model = TASK_MODELS.get(task, "slotssm")
        base = get_task(task).default_config("tiny", model)
        for amp in ("bf16", "fp16"):
            cfg = apply_overrides(base, ["train.steps=3", "train.log_every=1", "train.ckpt_every=3",
                                         "train.eval_every=0", "train.device=cuda", f"train.amp={amp}"])
            run_dir = out / "amp" / f"{task}-{amp}"
            t0 = time.perf_counter()
            metrics = train(cfg, run_dir, data_dir=out / "data", progress=False)
            loss = metrics.get("train_loss")
            if loss is None or loss != loss or not (run_dir / "ckpt-latest").is_dir():
                raise AssertionError(f"{task} amp={amp}: train_loss={loss}, checkpoint written: "
                                     f"{(run_dir / 'ckpt-latest').is_dir()}")
            done.append(f"{task}/{amp} {time.perf_counter() - t0:.0f}s")
    return "; ".join(done)


def check_ddp(out: Path) -> str:
    import torch

    if torch.cuda.device_count() < 2:
        raise SkipCheck(f"needs 2 GPUs (one per process; NCCL refuses two ranks on one device), found "
                        f"{torch.cuda.device_count()}")
    run_dir = out / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "slotssm", "train",
           "video_prediction", "--model", "slotssm", "--preset", "tiny", "--out", str(run_dir), "--data-dir",
           str(out / "data"), "--device", "cuda", "--no-progress", "--set", "train.steps=4", "--set",
           "train.ckpt_every=2", "--set", "train.eval_every=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun exited {proc.returncode}: {proc.stderr[-1500:]}")
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("world_size") != 2 or not (run_dir / "ckpt-latest").is_dir():
        raise AssertionError(f"world_size={config.get('world_size')}, checkpoint: {(run_dir / 'ckpt-latest').is_dir()}")
    return "2 processes, NCCL, 4 steps, checkpoint written"


class SkipCheck(Exception):
    pass


CHECKS = [
    ("pytest -m gpu", check_pytest),
    ("mamba_ssm dispatch", check_mamba_ssm),
    ("chunked scan on CUDA", check_chunked),
    ("AMP bf16/fp16 steps", check_amp),
    ("NCCL DDP (2 processes)", check_ddp),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--skip-ddp", action="store_true")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check")
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="slotssm-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    print(f"gpu_check on {torch.cuda.get_device_name()} x{torch.cuda.device_count()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}; working in {out}", flush=True)
    rows = []
    for name, fn in CHECKS:
        if name.startswith("NCCL") and args.skip_ddp:
            rows.append((name, "SKIP", 0.0, "--skip-ddp"))
            continue
        t0 = time.perf_counter()
        try:
            status, detail = "PASS", fn(out)
        except SkipCheck as why:
            status, detail = "SKIP", str(why)
        except Exception as err:  # a failed check is a row of the table, not the end of the run
            status, detail = "FAIL", f"{type(err).__name__}: {err}"
            traceback.print_exc()
        rows.append((name, status, time.perf_counter() - t0, detail))
        print(f"  {status} {name} ({rows[-1][2]:.0f} s)", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'check':<{width}}  result  time   detail")
    for name, status, secs, detail in rows:
        print(f"{name:<{width}}  {status:<6}  {secs:4.0f}s  {detail.splitlines()[0][:160] if detail else ''}")
    (out / "gpu_check.json").write_text(json.dumps([dict(zip(("check", "result", "seconds", "detail"), r))
                                                    for r in rows], indent=1))
    return 1 if any(r[1] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
