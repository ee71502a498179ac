"""Fused CPU scan kernels (numba): the state in a few cache lines, one pass over time, a recomputing adjoint backward.

Legend: B' batch (batch x slots for SlotSSM), E expanded SSM channels, N state size, T time, G groups of B/C,
H heads, P head width, L checkpoint interval (`chunk`), W work items of the backward (batch x group x channel block).

    math32.py   the scalar math as compiled in the kernels (`fast_exp`, `softplus`, `sigmoid`, `zero`, `map_array`):
                a vectorisable polynomial exp for float32, libm for float64
    scan.py     Mamba1, `fused_selective_scan`: per (batch, channel), h in R^N, one pass over time
    ssd.py      Mamba2, `fused_ssd_scan`: per (batch, head), h in R^{P x N}, one scalar decay per step
    common.py   what both share: the cached-jit decorator, work items, numba's thread pool, argument checks

Both store the state every L steps (checkpoints) and run the reverse-time adjoint recurrence backward, recomputing
each chunk's states from its checkpoint. See docs/kernels.md for the measurements behind every choice here.

The kernels are compiled with numba's on-disk cache (`cache=True`). numba checks a cached kernel against its own
source file only: after editing `math32.py` or `common.py`, clear the package's `__pycache__` (or point
NUMBA_CACHE_DIR at a fresh folder) so the kernels of `scan.py` and `ssd.py` that inline them are rebuilt.
"""

from slotssm.ssm.fused.common import DEFAULT_CHUNK
from slotssm.ssm.fused.math32 import fast_exp, map_array, sigmoid, softplus, zero
from slotssm.ssm.fused.scan import fused_selective_scan
from slotssm.ssm.fused.ssd import fused_ssd_scan

FUSED_OPS = ("selective_scan", "ssd_scan")

__all__ = ["DEFAULT_CHUNK", "FUSED_OPS", "fast_exp", "fused_selective_scan", "fused_ssd_scan", "map_array",
           "sigmoid", "softplus", "zero"]
