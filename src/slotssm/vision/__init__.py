"""Pixels <-> tokens and slots: CNN encoder, patch tokenizer, transformer and spatial broadcast decoders."""

from .decoders import SpatialBroadcastDecoder, TransformerDecoder, check_hard_pixels, reconstruction_loss
from .encoders import CNNEncoder, PatchTokenizer, SoftPositionEmbedding, build_grid, sincos_2d

__all__ = [
    "CNNEncoder",
    "PatchTokenizer",
    "SoftPositionEmbedding",
    "build_grid",
    "sincos_2d",
    "TransformerDecoder",
    "SpatialBroadcastDecoder",
    "check_hard_pixels",
    "reconstruction_loss",
]
