"""Presets of a task: `Preset` holds only what differs from the defaults; `PresetTask` (the class a new task
subclasses) builds its `default_config` from them, and its model from the task's `build_encoder` and `build_head`
around the run's sequence model."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from slotssm.config import OptimConfig, RunConfig, TrainConfig
from slotssm.models import list_models, model_config
from slotssm.models.registry import get_entry
from slotssm.tasks.base import Task
from slotssm.tasks.model import TaskModel, build_sequence_model


@dataclass(frozen=True)
class Preset:
    """A task preset: only what differs from the task's config defaults.

    data: fields of the task's config; model_preset: the models' size, "tiny" or a scale of
    `slotssm.models.presets.SCALES` ("w64k6", "paper_movi", ...; a new size goes there, not here); train: steps,
    batch_size, lr, warmup, optionally weight_decay, and any other TrainConfig field; model: model-config overrides
    applied where the model has the field (e.g. a slot count, meaningless for a single-state model); token_width:
    the models' input_dim.
    """

    data: dict
    model_preset: str
    train: dict
    model: dict = field(default_factory=dict)
    token_width: int = 64


class PresetTask(Task):
    """A task whose `default_config` is built from `PRESETS` and its config dataclass `config_cls`, and whose model
    is `TaskModel(build_encoder(...), the run's sequence model, build_head(...))`."""

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

    def build_model(self) -> TaskModel:
        """The sequence model of the run's config, then the task's encoder and head (in this order: the same seed
        gives the same weights)."""
        d, seq = self.config.data, build_sequence_model(self.config)
        encoder = self.build_encoder(d, seq.input_dim)
        return TaskModel(encoder, seq, self.build_head(d, encoder, seq.d_model))

    @abc.abstractmethod
    def build_encoder(self, d, width: int):
        """The vision encoder for data config `d`: pixels -> tokens of `width` (the sequence model's input_dim)."""

    @abc.abstractmethod
    def build_head(self, d, encoder, d_slot: int):
        """The decoder or head for data config `d` (and the `encoder` built before it) on slots (..., K, d_slot)."""
