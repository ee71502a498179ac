"""SlotRNN (paper App. C.2, eqs. 29-32): SlotSSM with a slot-wise GRU in place of the slot-wise SSM.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, H heads.

One layer at frame t, on slots e_t (B, K, D) and its recurrent state h_{t-1} (B, K, D):
    e_t = SlotEncoder(CLS, tokens_t)            first layer only (App. C.1 eqs. 18-22); later layers read the
                                                previous layer's output slots
    h_t^k = GRU(LN e_t^k, h_{t-1}^k)            one GRU cell, weights shared by every slot, each slot its own state
    h_t = SlotMixer(h_t)                        self-attention across the slots + MLP (eqs. 9-10)
The mixed slots are both the layer's output and its state for the next frame, so slots interact only through the
mixer. The recurrence cannot be parallelised over time: `forward` runs `step` frame by frame, and `step` handles
all B*K slots of a frame in one GRU call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slotssm.models.base import SequenceModel, SequenceOutput, run_steps
from slotssm.models.registry import register_model
from slotssm.models.slotssm import SlotEncoder, SlotMixer


@dataclass(frozen=True)
class SlotRNNConfig:
    """Hyper-parameters of SlotRNN; the names and defaults follow SlotSSMConfig."""

    input_dim: int = 64  # width of the incoming tokens
    d_model: int = 64  # slot width = GRU hidden width
    num_slots: int = 6  # K
    num_layers: int = 2
    num_heads: int = 4
    encoder_layers: int = 3  # depth of the first layer's self+cross slot encoder
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("input_dim", "d_model", "num_slots", "num_layers", "num_heads", "encoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads != 0:
            raise ValueError(f"num_heads: must divide d_model={self.d_model}, got {self.num_heads}")
        if self.mlp_ratio <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"mlp_ratio > 0 and 0 <= dropout < 1 expected, got {self.mlp_ratio}, {self.dropout}")


class SlotRNNLayer(nn.Module):
    """One SlotRNN layer at one frame: slots e (B, K, D), state h (B, K, D) -> mixed slots (B, K, D) = new state."""

    def __init__(self, cfg: SlotRNNConfig, first: bool):
        super().__init__()
        d = cfg.d_model
        self.encoder = None
        if first:
            self.encoder = SlotEncoder(d, cfg.num_slots, cfg.num_heads, cfg.encoder_layers, cfg.mlp_ratio)
        self.norm = nn.LayerNorm(d)
        self.cell = nn.GRUCell(d, d)  # shared by all slots (App. C.2)
        self.mixer = SlotMixer(d, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)

    def forward(self, e: Tensor, h: Tensor, return_attention: bool = False):
        """e: tokens (B, M, D) for the first layer, else slots (B, K, D); h (B, K, D) -> (s (B, K, D), maps | None)."""
        enc_attn = None
        if self.encoder is not None:
            e, enc_attn = self.encoder(e, return_attention)  # (B, K, D), (B, K, M)
        bsz, k, d = h.shape
        h = self.cell(self.norm(e).reshape(bsz * k, d), h.reshape(bsz * k, d)).view(bsz, k, d)  # (B, K, D)
        s, mix_attn = self.mixer(h, return_attention)  # (B, K, D), (B, H, K, K)
        return s, ({"encoder": enc_attn, "mixer": mix_attn} if return_attention else None)


TINY = dict(input_dim=12, d_model=16, num_slots=3, num_layers=2, num_heads=2, encoder_layers=1)


# Presets mirror SlotSSM's of the same name (Table 2 widths, slot counts, encoder depth): the GRU (6 D^2 + 6 D
# parameters) takes the place of the Mamba block, which keeps the totals within a few percent of SlotSSM's.
@register_model("slot_rnn", SlotRNNConfig, presets={
    "tiny": TINY,  # for tests
    "blinking_balls": dict(d_model=64, num_slots=6, num_heads=4, encoder_layers=3),
    "bouncing_balls": dict(d_model=64, num_slots=6, num_heads=4, encoder_layers=3),
    "snitch": dict(d_model=128, num_slots=8, num_heads=4, encoder_layers=3),
    "movi": dict(d_model=192, num_slots=11, num_heads=4, encoder_layers=3),
})
class SlotRNN(SequenceModel):
    """SlotRNN: tokens (B, T, M, D_in) -> slots (B, T, K, D), frame by frame.

    State: a list with one (B, K, D) tensor per layer (the mixed slots of the last frame; zeros before the first).
    Attention maps (return_attention=True): "encoder" (B, T, K, M), the slot encoder's cross-attention averaged
    over heads; "mixer" (B, T, H, K, K), the last layer's slot mixer.
    """

    def __init__(self, cfg: SlotRNNConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim, self.d_model, self.num_slots = cfg.input_dim, cfg.d_model, cfg.num_slots
        self.input_proj = nn.Linear(cfg.input_dim, cfg.d_model)
        self.layers = nn.ModuleList(SlotRNNLayer(cfg, first=i == 0) for i in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def init_state(self, batch_size, device=None, dtype=None) -> list[Tensor]:
        shape = (batch_size, self.num_slots, self.d_model)
        return [torch.zeros(shape, **self._param_like(device, dtype)) for _ in self.layers]

    def _check_state(self, state, batch_size: int) -> None:
        want = (batch_size, self.num_slots, self.d_model)
        if not isinstance(state, (list, tuple)) or len(state) != len(self.layers):
            raise ValueError(f"state: expected a list of {len(self.layers)} tensors {want}, got {type(state).__name__}")
        for h in state:
            if not isinstance(h, Tensor) or tuple(h.shape) != want:
                raise ValueError(f"state: expected tensors of shape {want}, got {getattr(h, 'shape', type(h))}")

    def _frame(self, tokens_t: Tensor, state, return_attention: bool):
        """tokens_t (B, M, D_in), state -> slots (B, K, D), new state, maps of this frame | None."""
        self._check_state(state, tokens_t.shape[0])
        s = self.input_proj(tokens_t)  # (B, M, D)
        new, maps = [], {}
        for layer, h in zip(self.layers, state):
            s, m = layer(s, h, return_attention)  # (B, K, D)
            new.append(s)
            if return_attention:
                if m["encoder"] is not None:  # only the first layer reads tokens
                    maps["encoder"] = m["encoder"]
                maps["mixer"] = m["mixer"]
        return self.norm(s), new, (maps if return_attention else None)

    def step(self, tokens_t, state):
        self.check_step_tokens(tokens_t)
        slots, state, _ = self._frame(tokens_t, state, False)
        return slots, state

    def forward(self, tokens, *, state=None, return_attention=False) -> SequenceOutput:
        self.check_tokens(tokens)
        if not return_attention:
            slots, state = run_steps(self, tokens, state)
            return SequenceOutput(slots, None, state)
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device, tokens.dtype)
        slots, maps = [], []
        for tokens_t in tokens.unbind(1):
            s, state, m = self._frame(tokens_t, state, True)
            slots.append(s)
            maps.append(m)
        stacked = {name: torch.stack([m[name] for m in maps], 1) for name in maps[0]}  # (B, T, ...)
        return SequenceOutput(torch.stack(slots, 1), stacked, state)
