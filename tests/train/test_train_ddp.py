"""Two processes under torchrun on the CPU (gloo): the ranks end with identical weights, rank 0 checkpoints them,
and a two-process run interrupted and resumed ends where an uninterrupted one does."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import toytask
import torch

from slotssm.train import distributed

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out_dir: Path, mode: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONFAULTHANDLER="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(HERE / "ddp_worker.py"), str(out_dir), mode,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=out_dir.parent)


def _fresh_model():
    return toytask.ToyModel(toytask.ToyModelConfig(), toytask.ToyDataConfig().dim)


def test_two_process_run_keeps_ranks_identical_and_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    proc = _torchrun(straight, "straight")
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [(straight / f"weights-rank{r}.sha256").read_text() for r in range(2)]
    assert digests[0] == digests[1], proc.stderr[-3000:]
    model = _fresh_model()
    safetensors.torch.load_model(model, str(straight / "ckpt-latest" / "model.safetensors"))
    assert toytask.weights_digest(model) == digests[0]
    assert digests[0] != toytask.weights_digest(_fresh_model())  # it trained
    assert json.loads((straight / "config.json").read_text())["world_size"] == 2
    steps = [json.loads(line)["step"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 6]  # rank 0 alone wrote the log: three train rows and the final val row

    resumed = tmp_path / "resumed"
    proc = _torchrun(resumed, "crash")
    assert proc.returncode != 0, proc.stderr[-3000:]
    saved = resumed / "ckpt-latest" / "checkpoint.json"
    assert saved.is_file() and json.loads(saved.read_text())["step"] == 3, proc.stderr[-3000:]
    proc = _torchrun(resumed, "resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(resumed / f"weights-rank{r}.sha256").read_text() for r in range(2)] == digests, proc.stderr[-3000:]


def test_single_process_path_is_world_size_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.owns_group) == (0, 1, True, False)
    assert distributed.all_reduce_mean({"a": 1.5}) == {"a": 1.5} and distributed.all_gather_object(3) == [3]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 2.0)
    distributed.all_reduce_grads([p])
    assert p.grad.tolist() == [2.0, 2.0]
    distributed.cleanup(ctx)
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        distributed.resolve_device("gpu0")
    if not torch.cuda.is_available():
        assert distributed.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            distributed.resolve_device("cuda")
