"""Single-state SSM baselines (paper §7.1): the SlotSSM layer stack with ONE monolithic SSM state per layer.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, H heads, E SSM channels.

Two registered models share one class:
  single_state_ssm        K = 1: one CLS token summarises each frame; d_model is widened so that the parameter
                          count matches SlotSSM's. Output slots (B, T, 1, D).
  single_state_ssm_split  K > 1: SlotSSM's slot encoder gives K slots per frame; the K slots are concatenated into
                          one (K*D) vector, one SSM runs over it (slots DO mix in time, which is the point of the
                          variant), its output is split back into K slots. Output (B, T, K, D).

One layer on slots s (B, T, K, D):
    s = FrameEncoder(CLS, tokens)                        first layer only (K = 1: cross-attention only)
    s = s + split(SSM(concat_k LN s  as (B, T, K*D)))    time: one state for all slots
    s = SlotMixer(s)  (K > 1)  |  s + MLP(LN s)  (K = 1)  space: slots meet once per step

With K = 1 every self-attention over slots is the identity on one token (its query and key weights would never get
a gradient), so the single-slot encoder and mixer drop it; the rest is SlotSSM's layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn

from slotssm.layers import MLP, CrossAttentionBlock
from slotssm.models.base import SequenceModel, SequenceOutput
from slotssm.models.registry import register_model
from slotssm.params import slot_table
from slotssm.models.slotssm import SlotEncoder, SlotMixer
from slotssm.ssm import Mamba, Mamba2


class ClsPooler(nn.Module):
    """One CLS token reads a frame: `num_layers` of [cross-attention to the context, MLP], then LN and a projection.

    SlotEncoder with K = 1 minus the self-attention among CLS tokens (the identity for a single token).
    context (B', S, D) -> (pooled (B', 1, D), attention (B', 1, S) averaged over heads | None).
    """

    def __init__(self, d_model: int, num_heads: int, num_layers: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        self.cls = slot_table(1, d_model)  # (1, D)
        self.layers = nn.ModuleList(
            CrossAttentionBlock(d_model, num_heads, mlp=True, mlp_ratio=mlp_ratio) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, context: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        q = self.cls.expand(context.shape[0], -1, -1)  # (B', 1, D)
        maps = None
        for layer in self.layers:
            q, maps = layer(q, context, return_attention=return_attention)
        attn = maps["cross"].mean(1) if return_attention else None  # (B', 1, S)
        return self.proj(self.norm(q)), attn


def frame_encoder(d_model: int, num_slots: int, num_heads: int, num_layers: int, mlp_ratio: float) -> nn.Module:
    """The per-frame slot encoder: SlotSSM's SlotEncoder for K > 1, a ClsPooler for K = 1."""
    if num_slots == 1:
        return ClsPooler(d_model, num_heads, num_layers, mlp_ratio)
    return SlotEncoder(d_model, num_slots, num_heads, num_layers, mlp_ratio)


class ResidualMLP(nn.Module):
    """x + MLP(LN x): the slot mixer of a single slot. (..., D) -> (..., D)."""

    def __init__(self, d_model: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, None]:
        return x + self.mlp(self.norm(x)), None


@dataclass(frozen=True)
class SingleStateSSMConfig:
    """Hyper-parameters of single_state_ssm (K = 1, not a field: a task's slot-count override cannot apply).

    `expand` applies to the SSM's input width K*D.
    """

    num_slots: ClassVar[int] = 1
    input_dim: int = 64
    d_model: int = 128  # width D of the single state's input
    num_layers: int = 2
    num_heads: int = 4
    encoder_layers: int = 3
    ssm: str = "mamba"  # "mamba" | "mamba2"
    d_state: int = 16
    d_conv: int = 4
    expand: float = 2.0
    headdim: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    impl: str = "auto"

    def __post_init__(self):
        ints = ("input_dim", "d_model", "num_slots", "num_layers", "num_heads", "encoder_layers", "d_state", "d_conv")
        for name in ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads: must divide d_model={self.d_model}, got {self.num_heads}")
        if self.ssm not in ("mamba", "mamba2"):
            raise ValueError(f"ssm: expected 'mamba' or 'mamba2', got {self.ssm!r}")
        if int(self.expand * self.ssm_width) < 1:
            raise ValueError(f"expand: int(expand * K * D) must be >= 1, got expand={self.expand}")

    @property
    def ssm_width(self) -> int:
        """Input width of the monolithic SSM: the K slots side by side."""
        return self.num_slots * self.d_model


@dataclass(frozen=True)
class SplitSSMConfig(SingleStateSSMConfig):
    """Hyper-parameters of single_state_ssm_split: K slots, one SSM over their concatenation."""

    num_slots: int = 6


def build_ssm(cfg, width: int) -> nn.Module:
    """Mamba or Mamba2 on inputs of `width` channels, from a config with ssm/d_state/d_conv/expand/headdim/impl."""
    if cfg.ssm == "mamba":
        return Mamba(width, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, impl=cfg.impl)
    return Mamba2(width, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, headdim=cfg.headdim, impl=cfg.impl)


class SingleStateSSMLayer(nn.Module):
    """One layer: [encoder] -> monolithic SSM over the concatenated slots -> slot mixer. (B, T, K, D) -> same."""

    def __init__(self, cfg: SingleStateSSMConfig, first: bool):
        super().__init__()
        d, k = cfg.d_model, cfg.num_slots
        self.num_slots = k
        self.encoder = frame_encoder(d, k, cfg.num_heads, cfg.encoder_layers, cfg.mlp_ratio) if first else None
        self.norm_ssm = nn.LayerNorm(d)
        self.ssm = build_ssm(cfg, cfg.ssm_width)
        if k > 1:
            self.mixer = SlotMixer(d, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
        else:
            self.mixer = ResidualMLP(d, cfg.mlp_ratio, cfg.dropout)

    def forward(self, s, tokens, state=None, return_attention=False):
        """s (B, T, K, D) | None (first layer), tokens (B, T, M, D) -> s (B, T, K, D), state, maps."""
        bsz = tokens.shape[0]
        enc = None
        if self.encoder is not None:
            s, enc = self.encoder(rearrange(tokens, "b t m d -> (b t) m d"), return_attention)  # (B*T, K, D)
            s = rearrange(s, "(b t) k d -> b t k d", b=bsz)
        y, state = self.ssm(rearrange(self.norm_ssm(s), "b t k d -> b t (k d)"), state)  # (B, T, K*D): one state
        s = s + rearrange(y, "b t (k d) -> b t k d", k=self.num_slots)  # split back into K slots
        s, mix = self.mixer(rearrange(s, "b t k d -> (b t) k d"), return_attention)  # slots of one frame together
        maps = None
        if return_attention:
            unflat = lambda a: None if a is None else rearrange(a, "(b t) ... -> b t ...", b=bsz)  # noqa: E731
            maps = {"encoder": unflat(enc), "mixer": unflat(mix)}
        return rearrange(s, "(b t) k d -> b t k d", b=bsz), state, maps

    def step(self, s, tokens_t, state):
        """s (B, K, D) | None, tokens_t (B, M, D) -> s (B, K, D), state."""
        if self.encoder is not None:
            s, _ = self.encoder(tokens_t)  # (B, K, D)
        y, state = self.ssm.step(rearrange(self.norm_ssm(s), "b k d -> b (k d)"), state)  # (B, K*D)
        s, _ = self.mixer(s + y.view_as(s))
        return s, state


TINY = dict(input_dim=12, d_model=16, num_layers=2, num_heads=2, d_state=4, expand=1.5, encoder_layers=1)


# Presets: SlotSSM's preset of the same name with the widths re-chosen so that the parameter count is within 15% of
# SlotSSM's (checked in tests/models/test_parallel_baselines.py; compared at input_dim=64).
@register_model("single_state_ssm", SingleStateSSMConfig, presets={
    "tiny": {**TINY, "d_model": 24},
    "blinking_balls": dict(d_model=72, d_state=16, expand=1.25, num_heads=4, encoder_layers=3),
    "bouncing_balls": dict(d_model=72, d_state=16, expand=2.0, num_heads=4, encoder_layers=3),
    "snitch": dict(d_model=148, d_state=16, expand=2.0, num_heads=4, encoder_layers=3),
    "movi": dict(d_model=220, d_state=16, expand=2.0, num_heads=4, encoder_layers=3),
})
@register_model("single_state_ssm_split", SplitSSMConfig, presets={
    "tiny": {**TINY, "num_slots": 3, "expand": 0.5},
    # The SSM's projections grow with (K*D)^2: a narrower slot width D and expand = 1/4 of K*D keep the count.
    "blinking_balls": dict(d_model=52, num_slots=6, d_state=16, expand=0.25, num_heads=4, encoder_layers=3),
    "bouncing_balls": dict(d_model=52, num_slots=6, d_state=16, expand=0.25, num_heads=4, encoder_layers=3),
    "snitch": dict(d_model=92, num_slots=8, d_state=16, expand=0.25, num_heads=4, encoder_layers=3),
    "movi": dict(d_model=112, num_slots=11, d_state=16, expand=0.25, num_heads=4, encoder_layers=3),
}, defaults=dict(d_model=64, expand=0.25))
class SingleStateSSM(SequenceModel):
    """Monolithic-state SSM over K slots (K = 1 or split). tokens (B, T, M, D_in) -> slots (B, T, K, D).

    The state is one SSMState per layer with batch B (not B*K): conv (B, E', W-1), ssm (B, E, N) for Mamba.
    """

    def __init__(self, cfg: SingleStateSSMConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim, self.d_model, self.num_slots = cfg.input_dim, cfg.d_model, cfg.num_slots
        self.input_proj = nn.Linear(cfg.input_dim, cfg.d_model)
        self.layers = nn.ModuleList(SingleStateSSMLayer(cfg, first=i == 0) for i in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def init_state(self, batch_size, device=None, dtype=None):
        self.check_batch_size(batch_size)
        return [layer.ssm.init_state(batch_size, device, dtype) for layer in self.layers]

    def forward(self, tokens, *, state=None, return_attention=False) -> SequenceOutput:
        """tokens (B, T, M, D_in), state from init_state/forward/step | None -> slots (B, T, K, D).

        Attention maps: "encoder" (B, T, K, M) (first layer's CLS cross-attention, averaged over heads) and, for
        K > 1, "mixer" (B, T, H, K, K) of the last layer.
        """
        self.begin_forward(tokens, state)
        x = self.input_proj(tokens)  # (B, T, M, D)
        s, states, maps = None, [], {}
        for i, layer in enumerate(self.layers):
            s, st, m = layer(s, x, None if state is None else state[i], return_attention)
            states.append(st)
            if m is not None:
                maps.update({f"{k}{i}": v for k, v in m.items() if v is not None})
        if return_attention:
            maps["encoder"] = maps["encoder0"]
            if self.num_slots > 1:
                maps["mixer"] = maps[f"mixer{len(self.layers) - 1}"]
        return SequenceOutput(self.norm(s), maps if return_attention else None, states)

    def step(self, tokens_t, state):
        """tokens_t (B, M, D_in), state -> slots_t (B, K, D), state."""
        state = self.begin_step(tokens_t, state)
        x = self.input_proj(tokens_t)  # (B, M, D)
        s, new = None, []
        for layer, st in zip(self.layers, state):
            s, st = layer.step(s, x, st)
            new.append(st)
        return self.norm(s), new
