"""Sequence models: tokens (B, T, M, D_in) -> slots (B, T, K, D), in parallel (`forward`) or frame by frame (`step`)."""

from slotssm.models.base import SequenceModel, SequenceOutput, run_steps
from slotssm.models.registry import build_model, count_parameters, list_models, list_presets, model_config

__all__ = [
    "SequenceModel", "SequenceOutput", "build_model", "count_parameters", "list_models", "list_presets",
    "model_config", "run_steps",
]
