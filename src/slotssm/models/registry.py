"""Model registry: every sequence model under one name, with a config dataclass and named presets.

    build_model("slotssm", preset="paper_blinking", input_dim=48)   # preset values, then overrides
    model_config("rim", "w128k8")                                   # the resolved frozen config
    list_models(), list_presets("slotssm")                          # "tiny" and the scales of models/presets.py

A model's presets come from `models.presets.scaled` (its test size and one per scale); the old dataset-named
presets ("blinking_balls", ...) are accepted as aliases of their scales.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slotssm.models.presets import ALIASES, resolve_preset

# Modules whose import registers models (kept explicit: the registry is the list of what exists).
MODEL_MODULES = (
    "slotssm.models.slotssm",
    "slotssm.models.single_state",
    "slotssm.models.transformer",
    "slotssm.models.psb",
    "slotssm.models.slot_rnn",
    "slotssm.models.rim",
    "slotssm.models.savi",
)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_cls: type
    config_cls: type
    presets: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # e.g. models.presets.scaled(...)
    defaults: dict[str, Any] = field(default_factory=dict)  # overrides applied before any preset


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, presets: Mapping[str, dict] | None = None,
                   defaults: dict | None = None):
    """Class decorator: register `model_cls(config)` under `name`, with `presets` (`models.presets.scaled`)."""

    def deco(model_cls):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, model_cls, config_cls, presets or {}, dict(defaults or {}))
        return model_cls

    return deco


def _load() -> None:
    for module in MODEL_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"model: unknown name {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_presets(name: str) -> list[str]:
    """The presets of model `name` in their order ("tiny", then the scales); aliases are not listed."""
    return list(get_entry(name).presets)


def model_config(name: str, preset: str | None = None, **overrides):
    """The frozen config of model `name`: its defaults, then the preset's values, then `overrides`.

    `preset` is one of `list_presets(name)` or an old dataset name of `models.presets.ALIASES`.
    """
    entry = get_entry(name)
    if preset is not None and preset not in entry.presets:
        preset = resolve_preset(preset)
    if preset is not None and preset not in entry.presets:
        aliases = ", ".join(f"{old}={new}" for old, new in ALIASES.items() if new in entry.presets)
        raise ValueError(f"preset: model {name!r} has presets {list(entry.presets)} (old names: {aliases}), "
                         f"got {preset!r}")
    values = {**entry.defaults, **(entry.presets[preset] if preset else {}), **overrides}
    known = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{name}: unknown config key(s) {unknown}; valid keys: {sorted(known)}")
    return entry.config_cls(**values)


def build_model(name: str, preset: str | None = None, config=None, **overrides):
    """Build model `name` from `config`, or from its preset and overrides."""
    entry = get_entry(name)
    if config is None:
        config = model_config(name, preset, **overrides)
    elif preset is not None or overrides:
        raise ValueError("build_model: pass either config or preset/overrides, not both")
    elif not isinstance(config, entry.config_cls):
        raise TypeError(f"config: expected {entry.config_cls.__name__} for model {name!r}, got {type(config).__name__}")
    return entry.model_cls(config)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
