"""Pieces shared by the tasks: generated datasets cached by content, image conversions, the task model container.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, C channels, H/W pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slotssm.data import VideoDataset, get_or_generate
from slotssm.models import build_model, list_models, model_config
from slotssm.train.config import OptimConfig, RunConfig, TrainConfig

VAL_SEED_OFFSET = 1_000_003  # validation videos come from a seed far from the training seed


def dataset_root(data_dir: Path, generator: str, params: dict, num_videos: int, seed: int) -> Path:
    """A directory named by the generator and a digest of what it holds: different params never collide."""
    key = json.dumps({"params": params, "num": num_videos, "seed": seed}, sort_keys=True, default=list)
    return Path(data_dir) / f"{generator}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def generated_split(data_dir, generator: str, params: dict, num_videos: int, seed: int, keys=None, **kw) -> VideoDataset:
    """Generate (once) and memory-map `num_videos` videos of `generator`."""
    root = dataset_root(data_dir, generator, params, num_videos, seed)
    get_or_generate(generator, root, num_videos, seed, progress=False, **params)
    return VideoDataset(root, keys=keys, **kw)


def make_run_config(task: str, preset: str, model_name: str, data, model_preset: str, input_dim: int,
                    train: TrainConfig, model_overrides: dict | None = None) -> RunConfig:
    """RunConfig with the model's preset config (input width set by the task); ValueError for an unknown model."""
    if model_name not in list_models():
        raise ValueError(f"model: unknown name {model_name!r}; known models: {', '.join(list_models())}")
    mcfg = model_config(model_name, model_preset, input_dim=input_dim, **(model_overrides or {}))
    return RunConfig(task=task, model_name=model_name, preset=preset, data=data, model=mcfg, train=train)


def train_config(steps: int, batch_size: int, lr: float, warmup: int, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, optim=OptimConfig(lr=lr, warmup_steps=warmup), **kw)


def build_sequence_model(config: RunConfig):
    return build_model(config.model_name, config=config.model)


def to_float_frames(x: Tensor) -> Tensor:
    """uint8 video (B, T, H, W[, C]) -> float (B, T, C, H, W) in [0, 1]."""
    x = x.float() / 255.0
    return x.unsqueeze(2) if x.dim() == 4 else x.permute(0, 1, 4, 2, 3)


def replace(cfg, **kw):
    return dataclasses.replace(cfg, **kw)


class TaskModel(nn.Module):
    """encoder (pixels -> tokens) + seq (a SequenceModel) + head; forward is task-specific, so it is not defined."""

    def __init__(self, encoder: nn.Module, seq: nn.Module, head: nn.Module, **extra: nn.Module):
        super().__init__()
        self.encoder, self.seq, self.head = encoder, seq, head
        for name, module in extra.items():
            self.add_module(name, module)


def batch_iter(dataset, batch_size: int, collate):
    """Deterministic, in-order batches over a whole dataset (evaluation)."""
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}


def mean_dict(rows: list[dict[str, float]], weights: list[int]) -> dict[str, float]:
    total = sum(weights)
    return {k: float(sum(r[k] * w for r, w in zip(rows, weights)) / total) for k in rows[0]}


def as_numpy_image(x: Tensor):
    """(C, H, W) float in [0, 1] -> (H, W, C) or (H, W) uint8 numpy."""
    img = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return img[..., 0] if img.shape[-1] == 1 else img
