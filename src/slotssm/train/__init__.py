"""Training: the trainer (AMP, DDP via torchrun, checkpoint/resume, logs)."""

from slotssm.train.checkpoint import CheckpointError, load_model_from_run
from slotssm.config import (
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    save_config,
)
from slotssm.train.config import load_run_config
from slotssm.train.trainer import TrainingDivergedError, train

__all__ = [
    "CheckpointError",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainingDivergedError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_model_from_run",
    "load_run_config",
    "save_config",
    "train",
]
