"""Time-causal transformer baselines: Transformer (one embedding per step) and SlotTransformer (paper App. C.2).

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, H heads,
C frames already in the KV cache.

Two registered models share one class:
  transformer        K = 1: a CLS token pools each frame's tokens by cross-attention (ClsPooler, the same pooling
                     as single_state_ssm); a causal transformer over the T step embeddings. Output (B, T, 1, D).
  slot_transformer   K > 1: SlotSSM's SlotEncoder gives K slots per frame (eq. 33); transformer layers over the
                     (T*K) slots where the slots of step t attend to every slot of steps <= t (eq. 34): causal
                     over time, full over the slots of the same and earlier steps. Output (B, T, K, D).

Per frame:   s_t = FrameEncoder(CLS, tokens_t) + time_embedding(t) [+ slot_embedding]      (B, K, D)
Over time:   s = s + SelfAttn(LN s, keys = LN s of steps <= t);  s = s + MLP(LN s)        num_layers times
Time positions are sinusoidal (no length limit); slot identities are learned.

State (a KV cache): the inputs of every layer at the past steps, (B, C*K, D) each, and the time offset. `forward`
on a chunk appends to it, `step` is `forward` on one frame, so `step` x T == `forward` and chunked == whole.
The cache grows by K vectors per layer and step; nothing is forgotten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from slotssm.layers import SelfAttentionBlock
from slotssm.models.base import CachedModel, SequenceOutput, check_heads, check_positive
from slotssm.models.components import frame_encoder
from slotssm.models.presets import scaled
from slotssm.models.registry import register_model
from slotssm.params import slot_table


def sinusoidal_embedding(positions: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sine/cosine embedding: positions (T,) -> (T, dim) float32 (odd dims: last channel zero)."""
    half = dim // 2
    i = torch.arange(half, device=positions.device, dtype=torch.float64)
    freqs = torch.exp(-math.log(max_period) * i / max(half, 1))  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * freqs[None]  # (T, dim/2)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (T, 2*half)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.float()


def block_causal_mask(num_new: int, num_cached: int, k: int, device=None) -> Tensor | None:
    """Allowed pairs (T*K, (C+T)*K), True where the key's step <= the query's step; None when all are allowed."""
    if num_new == 1:
        return None  # one new step sees everything in the cache and itself
    key_step = torch.arange((num_cached + num_new) * k, device=device) // k  # ((C+T)*K,)
    query_step = num_cached + torch.arange(num_new * k, device=device) // k  # (T*K,)
    return key_step[None, :] <= query_step[:, None]


class TransformerState(NamedTuple):
    """KV cache: `offset` frames seen so far, and per layer its inputs at those frames, (B, C*K, D) each."""

    offset: int
    past: list[Tensor]


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the transformer (K = 1, not a field: a task's slot-count override cannot apply)."""

    num_slots: ClassVar[int] = 1
    input_dim: int = 64
    d_model: int = 64
    num_layers: int = 4  # time-causal layers
    num_heads: int = 4
    encoder_layers: int = 3  # depth of the per-frame CLS / slot encoder
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_period: float = 10000.0  # of the sinusoidal time embedding

    def __post_init__(self):
        check_positive(self, "input_dim", "d_model", "num_slots", "num_layers", "num_heads", "encoder_layers")
        check_heads(self, "num_heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {self.dropout}")
        if self.max_period <= 1.0:
            raise ValueError(f"max_period: expected > 1, got {self.max_period}")


@dataclass(frozen=True)
class SlotTransformerConfig(TransformerConfig):
    """Hyper-parameters of the slot transformer: K slots per step."""

    num_slots: int = 6
    num_layers: int = 3


TINY = dict(input_dim=12, d_model=16, num_layers=2, num_heads=2, encoder_layers=1)


# Presets: SlotSSM's width (and slot count) at each scale, its 4 heads and 3-layer encoder; the depth is chosen so
# that the parameter count is within 15% of SlotSSM's (tests/models/test_parallel_baselines.py; at input_dim=64).
@register_model("transformer", TransformerConfig, presets=scaled(TINY, lambda s: dict(d_model=s.d_model, num_layers=4)))
@register_model("slot_transformer", SlotTransformerConfig, presets=scaled({**TINY, "num_slots": 3},
                                                                          lambda s: s.slots(num_layers=3)))
class TimeCausalTransformer(CachedModel):
    """Transformer (K = 1) / SlotTransformer (K > 1). tokens (B, T, M, D_in) -> slots (B, T, K, D).

    `forward(tokens, state=None)` returns the KV cache after the last frame as its state; `step` grows it by one
    step. Attention maps: "encoder" (B, T, K, M) (the frame encoder's cross-attention, mean over heads) and "time"
    (B, T, K, C+T, K) (last layer, mean over heads; zero on steps after the query's).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim, self.d_model, self.num_slots = cfg.input_dim, cfg.d_model, cfg.num_slots
        d, k = cfg.d_model, cfg.num_slots
        self.input_proj = nn.Linear(cfg.input_dim, d)
        self.encoder = frame_encoder(d, k, cfg.num_heads, cfg.encoder_layers, cfg.mlp_ratio)
        self.slot_embed = slot_table(k, d) if k > 1 else None  # (K, D) slot identity, std 1 like the slots
        self.layers = nn.ModuleList(
            SelfAttentionBlock(d, cfg.num_heads, mlp=True, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d)

    def init_state(self, batch_size, device=None, dtype=None) -> TransformerState:
        self.check_batch_size(batch_size)
        like = self._param_like(device, dtype)
        return TransformerState(0, [torch.zeros(batch_size, 0, self.d_model, **like) for _ in self.layers])

    def check_state(self, state, batch_size: int) -> None:  # the cache grows with time: its own check
        self._check_state(state, batch_size)

    def _check_state(self, state, batch_size: int) -> None:
        if not isinstance(state, TransformerState) or len(state.past) != len(self.layers):
            raise ValueError(
                f"state: expected a TransformerState with {len(self.layers)} layer caches, got {type(state).__name__}"
            )
        p = state.past[0]
        if p.dim() != 3 or p.shape[0] != batch_size or p.shape[1] % self.num_slots or p.shape[2] != self.d_model:
            raise ValueError(
                f"state: expected layer caches (B={batch_size}, C*K, D={self.d_model}) with K={self.num_slots}, "
                f"got {tuple(p.shape)}"
            )

    def _run(self, tokens: Tensor, state, return_attention: bool) -> SequenceOutput:
        """tokens (B, T, M, D_in) -> slots (B, T, K, D), maps, state."""
        bsz, t, m = tokens.shape[:3]
        k = self.num_slots
        state = self.init_state(bsz, tokens.device, tokens.dtype) if state is None else state
        self._check_state(state, bsz)
        x = self.input_proj(tokens)  # (B, T, M, D)
        s, enc = self.encoder(rearrange(x, "b t m d -> (b t) m d"), return_attention)  # (B*T, K, D)   eq. 33
        s = rearrange(s, "(b t) k d -> b t k d", b=bsz)
        pos = torch.arange(state.offset, state.offset + t, device=tokens.device)
        s = s + sinusoidal_embedding(pos, self.d_model, self.cfg.max_period).to(s.dtype)[:, None]  # (T, 1, D)
        if self.slot_embed is not None:
            s = s + self.slot_embed  # (K, D)
        h = rearrange(s, "b t k d -> b (t k) d")  # (B, T*K, D)
        cached = state.past[0].shape[1] // k  # C
        mask = block_causal_mask(t, cached, k, tokens.device)  # (T*K, (C+T)*K) | None    eq. 34
        past, w = [], None
        for layer, p in zip(self.layers, state.past):
            memory = torch.cat([p, h], dim=1)  # (B, (C+T)*K, D): this layer's inputs at every step so far
            past.append(memory)
            h, w = layer(h, memory=memory, attn_mask=mask, return_attention=return_attention)
        slots = self.norm(rearrange(h, "b (t k) d -> b t k d", k=k))
        maps = None
        if return_attention:
            maps = {
                "encoder": rearrange(enc, "(b t) k m -> b t k m", b=bsz),  # (B, T, K, M)
                # last layer, mean over heads: slots of step t over the slots of steps 0..C+T-1
                "time": rearrange(w["self"].mean(1), "b (t k) (s j) -> b t k s j", k=k, j=k),  # (B, T, K, C+T, K)
            }
        return SequenceOutput(slots, maps, TransformerState(state.offset + t, past))
