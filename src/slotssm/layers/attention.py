"""Multi-head attention on the slot axis: standard (softmax over keys) and inverted (softmax over queries).

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here L is the number of queries and S the number of keys/values
(L = K for slots attending to tokens, S = M; L = S for self-attention).

Both classes share one forward signature::

    out, attn = layer(x, context=None, *, causal=False, attn_bias=None, attn_mask=None,
                      key_padding_mask=None, return_attention=False)

Masks, all optional and combined:
  - ``causal``: query i sees keys j <= i + (S - L), i.e. the causal mask aligned bottom-right. For L == S this is
    the usual lower triangle; for L < S the queries are the last L positions of a sequence whose first S - L
    positions are cached (a KV cache). L > S is an error.
  - ``attn_bias``: additive float (B|1, H|1, L, S), per head.
  - ``attn_mask``: shared over heads, (L, S) or (B|1, L, S); bool = pairs allowed (True takes part), float = additive
    (-inf forbids the pair).
  - ``key_padding_mask``: bool (B, S), True = padded key that no query may use (nn.MultiheadAttention convention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["Attention", "InvertedAttention", "build_masks"]


def _check_mask(mask: Tensor, name: str, target: tuple[int, ...]) -> Tensor:
    """Check that every dim of `mask` equals the target's or 1 (explicit broadcasting only)."""
    if mask.dim() != len(target) or any(m not in (1, t) for m, t in zip(mask.shape, target)):
        want = "(" + ", ".join(f"{t}|1" for t in target) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(mask.shape)}")
    return mask


def build_masks(
    B: int, H: int, L: int, S: int, *, causal: bool = False, attn_bias: Tensor | None = None,
    attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None, device=None,
) -> tuple[Tensor | None, Tensor | None]:
    """Combine every mask argument into (bias, allowed).

    Returns:
        bias: float additive (B|1, H|1, L, S) with finite values only, or None.
        allowed: bool (B|1, 1, L, S), True where the pair may attend, or None when every pair may.
    """
    bias, allowed = None, None

    def _allow(a: Tensor) -> None:
        nonlocal allowed
        allowed = a if allowed is None else allowed & a

    if attn_bias is not None:
        if attn_bias.dtype == torch.bool or not attn_bias.is_floating_point():
            raise TypeError(f"attn_bias: expected a float tensor, got {attn_bias.dtype}; use attn_mask for bool masks")
        bias = _check_mask(attn_bias, "attn_bias", (B, H, L, S))
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)  # (1, L, S)
        m = _check_mask(attn_mask, "attn_mask", (B, L, S)).unsqueeze(1)  # (B|1, 1, L, S)
        if m.dtype == torch.bool:
            _allow(m)
        else:
            finite = ~torch.isneginf(m)
            _allow(finite)
            m = m.masked_fill(~finite, 0.0)
            bias = m if bias is None else bias + m
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask: expected a bool tensor, got {key_padding_mask.dtype}")
        if key_padding_mask.shape != (B, S):
            raise ValueError(f"key_padding_mask: expected shape ({B}, {S}), got {tuple(key_padding_mask.shape)}")
        _allow(~key_padding_mask[:, None, None, :])  # (B, 1, 1, S)
    if causal:
        if L > S:
            raise ValueError(f"causal: needs queries L <= keys S, got L={L}, S={S}")
        _allow(torch.ones(L, S, dtype=torch.bool, device=device).tril(S - L)[None, None])  # (1, 1, L, S)
    return bias, allowed


class _MultiHeadBase(nn.Module):
    """Projections and forward shared by both attentions: q from x (B, L, D), k and v from context (B, S, Dc); each
    subclass gives `_attend` (how queries weigh keys)."""

    def __init__(self, d_model: int, num_heads: int, d_context: int | None, bias: bool) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"num_heads: must divide d_model={d_model}, got {num_heads}")
        self.d_model, self.num_heads = d_model, num_heads
        self.d_context = d_model if d_context is None else d_context
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(self.d_context, d_model, bias=bias)
        self.v_proj = nn.Linear(self.d_context, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (B, L, {self.d_model}), got {tuple(x.shape)}")
        if context is None:
            if self.d_context != self.d_model:
                raise ValueError("context: required when d_context != d_model")
            context = x
        if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != self.d_context:
            raise ValueError(f"context: expected shape ({x.shape[0]}, S, {self.d_context}), got {tuple(context.shape)}")
        h = self.num_heads
        q = rearrange(self.q_proj(x), "b l (h p) -> b h l p", h=h)  # (B, H, L, P)
        k = rearrange(self.k_proj(context), "b s (h p) -> b h s p", h=h)  # (B, H, S, P)
        v = rearrange(self.v_proj(context), "b s (h p) -> b h s p", h=h)  # (B, H, S, P)
        return q, k, v

    def _merge(self, o: Tensor) -> Tensor:
        return self.out_proj(rearrange(o, "b h l p -> b l (h p)"))  # (B, L, D)

    def forward(
        self, x: Tensor, context: Tensor | None = None, *, causal: bool = False, attn_bias: Tensor | None = None,
        attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None, return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The forward of both attentions (masks: the module docstring): project, `_attend`, merge the heads."""
        q, k, v = self._project(x, context)  # (B, H, L, P), (B, H, S, P) x2
        masks = dict(attn_bias=attn_bias, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        o, attn = self._attend(q, k, v, causal, masks, return_attention)  # (B, H, L, P), (B, H, L, S) | None
        return self._merge(o), attn

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, masks: dict, return_attention: bool):
        """q (B, H, L, P), k and v (B, H, S, P), the mask arguments -> (o (B, H, L, P), attn (B, H, L, S) | None)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, d_context={self.d_context}"


class Attention(_MultiHeadBase):
    """Multi-head scaled dot-product attention; self-attention when `context` is None.

    Args:
        d_model: width D of the queries' source x and of the output.
        num_heads: H, must divide d_model (head width P = D / H).
        d_context: width Dc of the context (default D).
        dropout: dropout on the attention weights (training only).
        bias: biases in the four projections.

    forward(x (B, L, D), context (B, S, Dc) | None, ...) -> (out (B, L, D), attn (B, H, L, S) | None).
    Without `return_attention` it runs F.scaled_dot_product_attention; with it, the weights are computed
    explicitly (same values) and returned before dropout. Every query must be allowed at least one key.
    Any S works, so a caller with a KV cache passes q of length 1 and the cached sequence as context.
    """

    def __init__(self, d_model: int, num_heads: int, *, d_context: int | None = None, dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__(d_model, num_heads, d_context, bias)
        self.dropout = dropout

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, masks: dict, return_attention: bool):
        (B, H, L, _), S = q.shape, k.shape[2]
        p_drop = self.dropout if self.training else 0.0
        # Plain causal self-attention takes SDPA's dedicated path; everything else becomes one mask.
        plain_causal = causal and L == S and all(m is None for m in masks.values())
        bias, allowed = build_masks(B, H, L, S, causal=causal and not plain_causal, **masks, device=q.device)
        mask = allowed
        if bias is not None:
            bias = bias.to(q.dtype)
            mask = bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))
        if not return_attention:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop, is_causal=plain_causal)
            return o, None
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, L, S)
        if plain_causal:
            mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        attn = logits.softmax(dim=-1)  # (B, H, L, S)
        o = F.dropout(attn, p_drop, training=self.training) @ v  # (B, H, L, P)
        return o, attn


class InvertedAttention(_MultiHeadBase):
    """Inverted cross-attention (Slot Attention style): queries compete for each key.

    Per key s the logits (B, H, L, S) are soft-maxed jointly over heads and queries (the flattened H*L axis), then
    each query's weights are renormalised over the keys (divided by their sum + eps) and used for a weighted mean
    of the values. Masked pairs get weight 0 in both normalisations (a key no query may see contributes nothing).

    Args:
        d_model: width D of the queries x and of the output.
        num_heads: H, must divide d_model.
        d_context: width Dc of the context (default D).
        eps: added to each query's total weight before renormalising (1e-5 as in the official SlotSSMs / PSB code).
        bias: biases in the four projections.

    forward(x (B, L, D), context (B, S, Dc) | None, ...) -> (out (B, L, D), attn (B, H, L, S) | None), where attn
    is the post-softmax-over-queries weights (what object-centric models show as masks); attn[:, :, :, s] sums to 1
    over (H, L) for every key s that is allowed at least one query.
    """

    def __init__(self, d_model: int, num_heads: int, *, d_context: int | None = None, eps: float = 1e-5,
                 bias: bool = True) -> None:
        super().__init__(d_model, num_heads, d_context, bias)
        self.eps = eps

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, masks: dict, return_attention: bool):
        (B, H, L, _), S = q.shape, k.shape[2]
        bias, allowed = build_masks(B, H, L, S, causal=causal, **masks, device=q.device)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, L, S)
        if bias is not None:
            logits = logits + bias.to(logits.dtype)
        if allowed is not None:
            # A finite fill keeps fully masked keys NaN-free; multiplying by `allowed` then zeroes them.
            logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        attn = rearrange(logits, "b h l s -> b (h l) s").softmax(dim=1)  # softmax over queries x heads
        attn = rearrange(attn, "b (h l) s -> b h l s", h=H)  # (B, H, L, S)
        if allowed is not None:
            attn = attn * allowed
        weights = attn / (attn.sum(dim=-1, keepdim=True) + self.eps)  # renormalise over keys
        o = weights @ v  # (B, H, L, P)
        return o, (attn if return_attention else None)
