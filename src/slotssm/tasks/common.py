"""Pieces shared by the tasks: generated datasets cached by content, image conversions, the task model container.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, C channels, H/W pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from slotssm.data import VideoDataset, get_or_generate
from slotssm.models import build_model, list_models, model_config
from slotssm.models.registry import get_entry
from slotssm.tasks.base import Task
from slotssm.config import OptimConfig, RunConfig, TrainConfig

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


@dataclass(frozen=True)
class Preset:
    """A task preset: only what differs from the task's config defaults.

    data: fields of the task's config; model_preset: the model registry's preset; train: steps, batch_size, lr,
    warmup, optionally weight_decay, and any other TrainConfig field; model: model-config overrides applied where
    the model has the field
    (e.g. a slot count, meaningless for a single-state model); token_width: the models' input_dim.
    """

    data: dict
    model_preset: str
    train: dict
    model: dict = field(default_factory=dict)
    token_width: int = 64


class PresetTask(Task):
    """A task whose `default_config` is built from `PRESETS` and its config dataclass `config_cls`."""

    config_cls: ClassVar[type]
    PRESETS: ClassVar[dict[str, Preset]]

    @classmethod
    def default_config(cls, preset: str, model_name: str) -> RunConfig:
        cls.check_preset(preset)
        if model_name not in list_models():
            raise ValueError(f"model: unknown name {model_name!r}; known models: {', '.join(list_models())}")
        p = cls.PRESETS[preset]
        tr = dict(p.train)
        optim = OptimConfig(lr=tr.pop("lr"), warmup_steps=tr.pop("warmup"),
                            **({"weight_decay": tr.pop("weight_decay")} if "weight_decay" in tr else {}))
        known = {f.name for f in dataclasses.fields(get_entry(model_name).config_cls)}
        extra = {k: v for k, v in p.model.items() if k in known}
        mcfg = model_config(model_name, p.model_preset, input_dim=p.token_width, **extra)
        return RunConfig(task=cls.name, model_name=model_name, preset=preset, data=cls.config_cls(**p.data),
                         model=mcfg, train=TrainConfig(optim=optim, **tr))


def build_sequence_model(config: RunConfig):
    return build_model(config.model_name, config=config.model)


def to_float_frames(x: Tensor) -> Tensor:
    """uint8 video (B, T, H, W[, C]) -> float (B, T, C, H, W) in [0, 1]."""
    x = x.float() / 255.0
    return x.unsqueeze(2) if x.dim() == 4 else x.permute(0, 1, 4, 2, 3)


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
