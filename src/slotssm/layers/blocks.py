"""Pre-norm residual blocks built on `slotssm.layers.attention`.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. L is the number of queries, S the number of keys.

Every block returns a tuple ``(x, maps)``: x has the input's shape and maps is a dict of attention weights
(``{"self": (B, H, L, S), "cross": (B, H, L, S)}``, only the attentions the block has) when
``return_attention=True``, else None.

KV cache with `TransformerLayer` / `SelfAttentionBlock` (causal, pre-norm): keep each layer's inputs of the past
steps, and call ``layer(x_new, memory=torch.cat([past, x_new], 1))``; keys and values come from LN(memory), and the
causal mask is aligned on the last position, so the result equals the full-sequence forward at those positions.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import Attention, InvertedAttention

__all__ = ["MLP", "SelfAttentionBlock", "CrossAttentionBlock", "TransformerLayer"]

Maps = dict[str, Tensor] | None


class MLP(nn.Module):
    """Linear -> GELU -> Linear on the last axis: (..., D) -> (..., d_out or D).

    Args:
        d_model: input width D.
        hidden_mult: hidden width = round(hidden_mult * D).
        dropout: dropout after the activation and after the output layer.
        d_out: output width (default D).
    """

    def __init__(self, d_model: int, hidden_mult: float = 4.0, dropout: float = 0.0, d_out: int | None = None) -> None:
        super().__init__()
        hidden = max(1, round(hidden_mult * d_model))
        self.d_model = d_model
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, d_model if d_out is None else d_out), nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (..., {self.d_model}), got {tuple(x.shape)}")
        return self.net(x)


class SelfAttentionBlock(nn.Module):
    """x = x + Attn(LN(x)); then, if `mlp`, x = x + MLP(LN(x)).

    Args:
        d_model: D.  num_heads: H.
        mlp: append the residual MLP sub-block.
        mlp_ratio: MLP hidden width / D.
        causal: causal self-attention (aligned on the last position when `memory` is longer than x).
        dropout: attention and MLP dropout.

    forward(x (B, L, D), *, memory (B, S, D) | None, attn_bias, attn_mask, key_padding_mask, return_attention)
    -> (x (B, L, D), {"self": (B, H, L, S)} | None). Keys/values come from LN(memory), default LN(x).
    """

    def __init__(self, d_model: int, num_heads: int, *, mlp: bool = True, mlp_ratio: float = 4.0,
                 causal: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.causal = causal
        self.norm = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, num_heads, dropout=dropout)
        self.norm_mlp = nn.LayerNorm(d_model) if mlp else None
        self.mlp = MLP(d_model, mlp_ratio, dropout) if mlp else None

    def forward(self, x: Tensor, *, memory: Tensor | None = None, attn_bias: Tensor | None = None,
                attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None,
                return_attention: bool = False) -> tuple[Tensor, Maps]:
        h = self.norm(x)  # (B, L, D)
        ctx = h if memory is None else self.norm(memory)  # (B, S, D)
        a, w = self.attn(h, ctx, causal=self.causal, attn_bias=attn_bias, attn_mask=attn_mask,
                         key_padding_mask=key_padding_mask, return_attention=return_attention)
        x = x + a
        if self.mlp is not None:
            x = x + self.mlp(self.norm_mlp(x))
        return x, ({"self": w} if return_attention else None)


class CrossAttentionBlock(nn.Module):
    """x = x + CrossAttn(LN(x), LN(context)); then, if `mlp`, x = x + MLP(LN(x)).

    Args:
        d_model: D of the queries x.  num_heads: H.
        d_context: width Dc of the context (default D).
        inverted: use `InvertedAttention` (softmax over queries, Slot Attention style) instead of `Attention`.
        mlp: append the residual MLP sub-block (off by default).
        mlp_ratio: MLP hidden width / D.
        dropout: attention (standard only) and MLP dropout.

    forward(x (B, L, D), context (B, S, Dc), *, attn_bias, attn_mask, key_padding_mask, return_attention)
    -> (x (B, L, D), {"cross": (B, H, L, S)} | None).
    """

    def __init__(self, d_model: int, num_heads: int, *, d_context: int | None = None, inverted: bool = False,
                 mlp: bool = False, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        d_context = d_model if d_context is None else d_context
        self.norm = nn.LayerNorm(d_model)
        self.norm_context = nn.LayerNorm(d_context)
        if inverted:
            self.attn = InvertedAttention(d_model, num_heads, d_context=d_context)
        else:
            self.attn = Attention(d_model, num_heads, d_context=d_context, dropout=dropout)
        self.norm_mlp = nn.LayerNorm(d_model) if mlp else None
        self.mlp = MLP(d_model, mlp_ratio, dropout) if mlp else None

    def forward(self, x: Tensor, context: Tensor, *, attn_bias: Tensor | None = None,
                attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None,
                return_attention: bool = False) -> tuple[Tensor, Maps]:
        a, w = self.attn(self.norm(x), self.norm_context(context), attn_bias=attn_bias, attn_mask=attn_mask,
                         key_padding_mask=key_padding_mask, return_attention=return_attention)
        x = x + a  # (B, L, D)
        if self.mlp is not None:
            x = x + self.mlp(self.norm_mlp(x))
        return x, ({"cross": w} if return_attention else None)


class TransformerLayer(nn.Module):
    """Pre-norm [self-attention, optional cross-attention, MLP], each with a residual.

    Args:
        d_model: D.  num_heads: H.
        cross: add a cross-attention sub-block (then `context` is required in forward).
        d_context: width Dc of the context (default D).
        causal: causal self-attention.
        mlp_ratio: MLP hidden width / D.
        inverted: the cross-attention is `InvertedAttention`.
        dropout: attention and MLP dropout.

    forward(x (B, L, D), context (B, S, Dc) | None, *, memory (B, S', D) | None, attn_bias, key_padding_mask,
    context_padding_mask (B, S) | None, return_attention) -> (x (B, L, D), {"self", ["cross"]} | None).
    `attn_bias` (B|1, H|1, L, S') and `key_padding_mask` (B, S') apply to the self-attention.
    """

    def __init__(self, d_model: int, num_heads: int, *, cross: bool = False, d_context: int | None = None,
                 causal: bool = False, mlp_ratio: float = 4.0, inverted: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_block = SelfAttentionBlock(d_model, num_heads, mlp=False, causal=causal, dropout=dropout)
        self.cross_block = (CrossAttentionBlock(d_model, num_heads, d_context=d_context, inverted=inverted,
                                                dropout=dropout) if cross else None)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: Tensor, context: Tensor | None = None, *, memory: Tensor | None = None,
                attn_bias: Tensor | None = None, key_padding_mask: Tensor | None = None,
                context_padding_mask: Tensor | None = None, return_attention: bool = False) -> tuple[Tensor, Maps]:
        x, maps = self.self_block(x, memory=memory, attn_bias=attn_bias, key_padding_mask=key_padding_mask,
                                  return_attention=return_attention)
        if self.cross_block is not None:
            if context is None:
                raise ValueError("context: required by a TransformerLayer built with cross=True, got None")
            x, cmaps = self.cross_block(x, context, key_padding_mask=context_padding_mask,
                                        return_attention=return_attention)
            if maps is not None:
                maps.update(cmaps)
        elif context is not None:
            raise ValueError("context: this TransformerLayer has no cross-attention (cross=False), got a tensor")
        x = x + self.mlp(self.norm_mlp(x))  # (B, L, D)
        return x, maps
