"""The slot axis: multi-head attention (standard and inverted) and pre-norm residual blocks."""

from .attention import Attention, InvertedAttention, build_masks
from .blocks import MLP, CrossAttentionBlock, SelfAttentionBlock, TransformerLayer

__all__ = [
    "Attention",
    "InvertedAttention",
    "build_masks",
    "MLP",
    "SelfAttentionBlock",
    "CrossAttentionBlock",
    "TransformerLayer",
]
