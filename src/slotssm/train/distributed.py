"""Data-parallel plumbing over torch.distributed: one code path for 1 and for N processes.

`torchrun --nproc_per_node N -m slotssm train ...` sets WORLD_SIZE, RANK and LOCAL_RANK; `setup` then joins the
process group (gloo on CPU, NCCL on CUDA, one GPU per local rank). Without those variables everything below is a
cheap no-op and the trainer runs as a single process.

Gradients are averaged explicitly after `backward` (`all_reduce_grads`) rather than through
`DistributedDataParallel`: a task's loss may call any method of its model (encoder, sequence model and decoder
separately, step-by-step rollouts), which DDP's forward-hook bookkeeping does not see, and the task always gets its
own module instead of a wrapper whose attributes hide behind `.module`. The price is that communication does not
overlap the backward pass; gradients travel in a few large flat buckets, so it is one collective per bucket.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# Rank 0 evaluates and writes checkpoints while the others wait at a barrier; allow that to take a while.
_TIMEOUT = datetime.timedelta(minutes=60)
_BUCKET_NUMEL = 1 << 24  # 16 M elements per all-reduce (64 MB in float32)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # True when `setup` created the process group (and `cleanup` must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """"auto" -> cuda (the local rank's GPU) if available, else cpu; an unavailable explicit device is an error."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"train.device: unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={spec!r} but CUDA is not available here; use cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        elif world_size > 1:
            raise ValueError(f"train.device={spec!r} pins one GPU, but {world_size} processes need one each; use cuda")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"train.device={spec!r} but MPS is not available here")
    return device


def setup(device: str = "auto") -> DistContext:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, world_size)
    owns = False
    if world_size > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=_TIMEOUT)
            owns = True
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


def cleanup(ctx: DistContext, *, ok: bool = True) -> None:
    """Leave the process group if `setup` created it.

    After a success every process first meets at a barrier, so none tears its connections down while another is
    still receiving the last collective. After a failure nothing collective is attempted (the other processes may be
    stuck in a collective of their own, and destroying the group would wait for them): the process exits and
    torchrun stops the rest.
    """
    if ctx.owns_group and dist.is_initialized() and ok:
        dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def is_main() -> bool:
    """True on rank 0, and in a single-process run."""
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single-process run)."""
    if _active():
        dist.barrier()


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average each float of `values` over processes; every process must pass the same keys."""
    if not _active() or not values:
        return dict(values)
    keys = sorted(values)
    buf = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())  # (len(keys),)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    buf /= dist.get_world_size()
    return dict(zip(keys, buf.tolist()))


def all_reduce_grads(params: list[nn.Parameter]) -> None:
    """Replace each gradient with its mean over processes (gradients missing everywhere stay None)."""
    if not _active():
        return
    params = [p for p in params if p.requires_grad]
    world = dist.get_world_size()
    if any(p.grad is not None and p.grad.is_sparse for p in params):
        raise ValueError("all_reduce_grads: sparse gradients are not supported")
    # Which parameters got a gradient on at least one process (an unused branch on one rank is zero there).
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=_comm_device())
    dist.all_reduce(has_grad, op=dist.ReduceOp.SUM)
    used = [p for p, h in zip(params, has_grad.tolist()) if h > 0]
    for bucket in _buckets(used):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket]
        flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        for p, chunk in zip(bucket, flat.split([g.numel() for g in grads])):
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))


def _buckets(params: list[nn.Parameter]) -> list[list[nn.Parameter]]:
    """Consecutive runs of parameters with one dtype and device, each under `_BUCKET_NUMEL` elements."""
    buckets: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        last = buckets[-1] if buckets else None
        if last is None or size + p.numel() > _BUCKET_NUMEL or (p.dtype, p.device) != (last[0].dtype, last[0].device):
            buckets.append([p])
            size = p.numel()
        else:
            last.append(p)
            size += p.numel()
    return buckets


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of `module` from rank `src` to all processes."""
    if not _active():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=src)


def all_gather_object(obj) -> list:
    """Every process's `obj`, indexed by rank (a one-element list in a single-process run)."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
