"""slotssm: Slot State Space Models in PyTorch.

Legend used across the package (see docs/architecture.md):
    B batch, T time (the scan axis), K slots, M tokens per frame, D model width,
    H heads, P head width, E expanded SSM channels, N SSM state size.
"""

__version__ = "0.1.0"
