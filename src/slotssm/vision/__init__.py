"""Pixels <-> tokens and slots: CNN encoder, patch tokenizer, transformer and spatial broadcast decoders."""

from .decoders import SpatialBroadcastDecoder, TransformerDecoder, reconstruction_loss
from .encoders import CNNEncoder, PatchTokenizer, SoftPositionEmbedding, build_grid, sincos_2d

__all__ = [
    "CNNEncoder",
    "PatchTokenizer",
    "SoftPositionEmbedding",
    "build_grid",
    "sincos_2d",
    "TransformerDecoder",
    "SpatialBroadcastDecoder",
    "reconstruction_loss",
]
