"""The Task interface: one experiment of the paper, wiring data, a model, its loss, evaluation and pictures.

A new task subclasses `slotssm.tasks.presets.PresetTask` (this interface with `default_config` built from a
`PRESETS` dict and a data-config dataclass, and `build_model` from its `build_encoder` and `build_head`), registers
itself with `@register_task(name, config_cls, PRESETS)` and adds its module to `slotssm.tasks.registry.TASK_MODULES`. Around it: `tasks.datasets` (generated splits cached by content),
`tasks.model` (`TaskModel`: encoder + seq + head), `tasks.evaluation` (batch iteration, weighted means).

A task owns everything that is specific to an experiment, so the trainer (`slotssm.train.trainer`) stays generic:

- `default_config(preset, model_name)`: the `RunConfig` of a preset ("tiny", "small", "paper"); it validates the
  model name (through the model registry) and the preset, raising ValueError listing the valid ones.
- `build_model()`: the full `nn.Module` (vision encoder + sequence model + decoder/head), freshly initialised.
- `datasets()`: (train, val) map-style datasets whose items are dicts of tensors; `collate` stacks them.
- `loss(model, batch)`: a scalar loss to minimise and a few floats to log. The trainer moves the batch to the
  device, runs this under autocast when AMP is on, and averages gradients across processes itself, so `model` is
  always the task's own module (never a wrapper) and the loss may call any of its methods.
- `evaluate(model, dataset, batch_size=..., device=...)`: the experiment's metrics (floats) on a whole dataset;
  called under `torch.no_grad()` with the model in eval mode.
- `visualise(model, dataset, out_dir, device=...)`: writes figures/GIFs into `out_dir`, returns their paths.
- `probe(model, batch)`: slots, prediction and slot attention of a batch for the training-health probes
  (`slotssm.train.health`); optional, a task without it is trained without health probes.

For a resumed run to repeat an uninterrupted one exactly, a dataset item must be a function of its index (no
global randomness in `__getitem__`); randomness inside `loss` should come from torch's global generator, whose state
the checkpoints save.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

if TYPE_CHECKING:
    from slotssm.config import RunConfig


@dataclass
class ProbeOutput:
    """What a task's `probe(model, batch)` returns for the health probes (tensors on any device, no grad).

    slots (B, T, K, D); prediction (B, ...) the task's output; encoder_attention (B, [T,] K, M): the sequence
    model's slot attention over its input tokens; decoder_attention (B, [T,] M, K): each output position's weights
    over the slots (transformer decoder attention, spatial broadcast alpha masks). None where there is none.
    """

    slots: Tensor
    prediction: Tensor
    encoder_attention: Tensor | None = None
    decoder_attention: Tensor | None = None


class Task(abc.ABC):
    """Base class of every experiment; subclasses register themselves with `@register_task`."""

    name: ClassVar[str]
    presets: ClassVar[tuple[str, ...]] = ("tiny", "small", "paper")

    @classmethod
    @abc.abstractmethod
    def default_config(cls, preset: str, model_name: str) -> RunConfig:
        """The resolved config of `preset` for model `model_name`; ValueError for an unknown preset or model."""

    def __init__(self, config: RunConfig, data_dir: str | Path):
        if config.task != self.name:
            raise ValueError(f"config.task must be {self.name!r} for {type(self).__name__}, got {config.task!r}")
        self.config = config
        self.data_dir = Path(data_dir)  # where generated datasets are cached

    @classmethod
    def check_preset(cls, preset: str) -> None:
        """Raise ValueError unless `preset` is one of this task's presets."""
        if preset not in cls.presets:
            raise ValueError(f"unknown preset {preset!r} for task {cls.name!r}; choose one of {', '.join(cls.presets)}")

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model for `self.config` (on the CPU; the trainer moves it)."""

    @abc.abstractmethod
    def datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val) map-style datasets; items are dicts of tensors."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        """(scalar loss, floats to log) for one collated `batch` already on the model's device."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, dataset: Dataset, *, batch_size: int, device) -> dict[str, float]:
        """The experiment's metrics over all of `dataset`."""

    @abc.abstractmethod
    def visualise(self, model: nn.Module, dataset: Dataset, out_dir: Path, *, device) -> list[Path]:
        """Write pictures of the model's behaviour on `dataset` into `out_dir`; return the files written."""

    def probe(self, model: nn.Module, batch: dict):
        """A `ProbeOutput` for `batch` (slots, prediction, encoder/decoder slot attention)."""
        raise NotImplementedError(f"task {self.name!r} has no health probe")

    def reference_metrics(self, dataset: Dataset) -> dict[str, dict[str, float]]:
        """Metrics of model-free answers on `dataset` ({name: metrics}), the floor a trained model must clear.

        Results pages put them under the models: a model no better than these has not learned the task yet.
        """
        return {}

    def collate(self, items: list[dict]) -> dict:
        """Stack a list of dataset items into a batch (default: `torch.utils.data.default_collate`)."""
        return default_collate(items)
