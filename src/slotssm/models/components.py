"""Modules several sequence models share: the slot encoder (and its one-token form, the CLS pooler), the frame
encoder that picks between them, the slot mixer and the residual MLP of a single slot; `frame_maps` for the attention
maps of a layer that runs every frame at once.

Legend: B batch, T time, K slots, M tokens per frame, D model width, H heads; B' any flattened batch (B, B*T),
S context tokens.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from slotssm.layers import MLP, CrossAttentionBlock, SelfAttentionBlock, TransformerLayer
from slotssm.params import slot_table


class SlotEncoder(nn.Module):
    """CLS tokens as queries, `num_layers` of [self-attn among them, cross-attn to the context, MLP], LN, projected.

    Paper §4.1 / App. C.1 eqs. 18-22. context (B', S, D) -> slots (B', K, D), cross-attention (B', K, S) averaged
    over heads | None. Also changes the slot count between layers (context = the previous layer's slots).
    `self_attention=False` drops the self-attention among the CLS tokens (the CLS pooler: with one token it is the
    identity, and its query and key weights would never get a gradient).
    """

    def __init__(self, d_model: int, num_slots: int, num_heads: int, num_layers: int = 3, mlp_ratio: float = 4.0,
                 *, self_attention: bool = True):
        super().__init__()
        self.cls = slot_table(num_slots, d_model)  # (K, D), std 1: distinct slots from the first step
        if self_attention:
            layers = (TransformerLayer(d_model, num_heads, cross=True, mlp_ratio=mlp_ratio) for _ in range(num_layers))
        else:
            layers = (CrossAttentionBlock(d_model, num_heads, mlp=True, mlp_ratio=mlp_ratio) for _ in range(num_layers))
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, context: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        q = self.cls.expand(context.shape[0], -1, -1)  # (B', K, D)
        maps = None
        for layer in self.layers:
            q, maps = layer(q, context, return_attention=return_attention)
        attn = maps["cross"].mean(1) if return_attention else None  # (B', K, S)
        return self.proj(self.norm(q)), attn


class ClsPooler(SlotEncoder):
    """One CLS token reads a frame: a SlotEncoder with K = 1 and no self-attention. (B', S, D) -> (B', 1, D)."""

    def __init__(self, d_model: int, num_heads: int, num_layers: int = 3, mlp_ratio: float = 4.0):
        super().__init__(d_model, 1, num_heads, num_layers, mlp_ratio, self_attention=False)


def frame_encoder(d_model: int, num_slots: int, num_heads: int, num_layers: int, mlp_ratio: float) -> SlotEncoder:
    """The per-frame slot encoder: a SlotEncoder for K > 1, a ClsPooler for K = 1."""
    if num_slots == 1:
        return ClsPooler(d_model, num_heads, num_layers, mlp_ratio)
    return SlotEncoder(d_model, num_slots, num_heads, num_layers, mlp_ratio)


class SlotMixer(nn.Module):
    """Self-attention across the slots of one frame, then an MLP (paper eqs. 9-10). (B', K, D) -> (B', K, D)."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.block = SelfAttentionBlock(d_model, num_heads, mlp=True, mlp_ratio=mlp_ratio, dropout=dropout)

    def forward(self, s: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        s, maps = self.block(s, return_attention=return_attention)
        return s, (maps["self"] if return_attention else None)  # (B', H, K, K)


class ResidualMLP(nn.Module):
    """x + MLP(LN x): the slot mixer of a single slot. (..., D) -> (..., D), None."""

    def __init__(self, d_model: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, None]:
        return x + self.mlp(self.norm(x)), None


def slot_mixer(d_model: int, num_slots: int, num_heads: int, mlp_ratio: float, dropout: float) -> nn.Module:
    """SlotMixer for K > 1, ResidualMLP for K = 1 (self-attention over one slot is the identity)."""
    if num_slots > 1:
        return SlotMixer(d_model, num_heads, mlp_ratio, dropout)
    return ResidualMLP(d_model, mlp_ratio, dropout)


def frame_maps(bsz: int, **maps: Tensor | None) -> dict[str, Tensor | None]:
    """Attention maps of every frame at once, (B*T, ...) -> (B, T, ...), under their names (None stays None)."""
    return {name: None if a is None else rearrange(a, "(b t) ... -> b t ...", b=bsz) for name, a in maps.items()}
