"""The SequenceModel interface: tokens (B, T, M, D_in) -> slots (B, T, K, D), in parallel or step by step.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, H heads.

Every model implements
    forward(tokens, *, state=None, return_attention=False) -> SequenceOutput    # the whole sequence (training)
    init_state(batch_size, device=None, dtype=None) -> state                    # before the first frame
    step(tokens_t, state) -> (slots_t, state)                                   # one frame (inference)
and `step` run T times equals `forward` to float tolerance (tested for every registered model). `forward` also
takes a state and returns the state after its last frame, so a long video can be processed in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class SequenceOutput:
    """slots (B, T, K, D); attention: named maps (e.g. "encoder" (B, T, K, M)) when asked; state after the last frame."""

    slots: Tensor
    attention: dict[str, Tensor] | None = None
    state: Any = None


class SequenceModel(nn.Module):
    """Base class: input checks shared by every sequence model. Subclasses set `input_dim`, `d_model`, `num_slots`."""

    input_dim: int
    d_model: int
    num_slots: int  # slots of the output (K of the last layer)

    def check_tokens(self, tokens: Tensor, name: str = "tokens") -> None:
        """tokens must be float (B, T, M, D_in) with T >= 1 and D_in == input_dim."""
        if not isinstance(tokens, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(tokens).__name__}")
        if not tokens.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got dtype {tokens.dtype}")
        if tokens.dim() != 4 or tokens.shape[-1] != self.input_dim or tokens.shape[1] == 0 or tokens.shape[2] == 0:
            raise ValueError(
                f"{name}: expected shape (B, T, M, D_in) with T, M >= 1 and D_in={self.input_dim}, got {tuple(tokens.shape)}"
            )

    def check_step_tokens(self, tokens_t: Tensor) -> None:
        """tokens_t must be float (B, M, D_in)."""
        if not isinstance(tokens_t, Tensor) or not tokens_t.is_floating_point():
            raise ValueError(f"tokens_t: expected a floating-point tensor (B, M, D_in), got {getattr(tokens_t, 'dtype', type(tokens_t))}")
        if tokens_t.dim() != 3 or tokens_t.shape[-1] != self.input_dim or tokens_t.shape[1] == 0:
            raise ValueError(f"tokens_t: expected shape (B, M, D_in) with D_in={self.input_dim}, got {tuple(tokens_t.shape)}")

    def forward(self, tokens: Tensor, *, state: Any = None, return_attention: bool = False) -> SequenceOutput:
        raise NotImplementedError

    def init_state(self, batch_size: int, device=None, dtype=None) -> Any:
        raise NotImplementedError

    def step(self, tokens_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def _param_like(self, device=None, dtype=None) -> dict:
        p = next(self.parameters())
        return dict(device=device or p.device, dtype=dtype or p.dtype)


def run_steps(model: SequenceModel, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """Apply `model.step` frame by frame: tokens (B, T, M, D_in) -> slots (B, T, K, D), final state."""
    if state is None:
        state = model.init_state(tokens.shape[0], device=tokens.device, dtype=tokens.dtype)
    slots = []
    for tokens_t in tokens.unbind(1):
        s, state = model.step(tokens_t, state)
        slots.append(s)
    return torch.stack(slots, dim=1), state
