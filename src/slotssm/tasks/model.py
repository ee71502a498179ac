"""The task model container (vision encoder + sequence model + head) and the conversions around it.

Legend: B batch, T time, C channels, H/W pixels.
"""

from __future__ import annotations

from torch import Tensor, nn

from slotssm.config import RunConfig
from slotssm.models import build_model
from slotssm.vision import CNNEncoder


def build_sequence_model(config: RunConfig):
    """The run's sequence model, built from its model name and config."""
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


class CNNTokens:
    """`build_encoder` of the tasks whose frames go through `vision.CNNEncoder` (a `PresetTask` mixin, listed first):
    their data config has `cnn_channels` and `cnn_strides` (one stride per layer)."""

    def build_encoder(self, d, width: int) -> CNNEncoder:
        return CNNEncoder(3, width, channels=d.cnn_channels, num_layers=len(d.cnn_strides), strides=d.cnn_strides)
