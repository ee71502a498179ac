"""Presets of a task: `Preset` holds only what differs from the defaults; `PresetTask` (the class a new task
subclasses) builds its `default_config` from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from slotssm.config import OptimConfig, RunConfig, TrainConfig
from slotssm.models import list_models, model_config
from slotssm.models.registry import get_entry
from slotssm.tasks.base import Task


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
