"""What the fused kernels share: the jit decorator, work items, numba's thread pool, the ops' argument checks.

Legend: B' batch (batch x slots for SlotSSM), E expanded SSM channels, N state size, T time, G groups of B/C,
L checkpoint interval (`chunk`), W work items (batch x group x channel block).

A work item w = (batch, group, channel block) holds its ec channels in the innermost ("lane") axis of local
buffers: every inner loop runs over ec contiguous channels (long enough to vectorise well), and the reductions
over channels stay inside one work item, so no two threads write the same element.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import torch
from numba import njit, prange

log = logging.getLogger("slotssm.ssm")

DEFAULT_CHUNK = 64
_FM = {"contract", "reassoc", "nsz"}  # reassoc lets LLVM vectorise the N-wide reductions


def _jit(fn=None, *, parallel=True):
    """njit with an on-disk cache when one is writable (numba's own locators, then NUMBA_CACHE_DIR); else in memory."""

    def wrap(f):
        try:
            return njit(parallel=parallel, cache=True, fastmath=_FM, error_model="numpy")(f)
        except RuntimeError as err:  # no writable cache location: compile each process instead of crashing
            log.info("slotssm: numba cache unavailable for %s (%s); compiling in memory", f.__name__, err)
            return njit(parallel=parallel, cache=False, fastmath=_FM, error_model="numpy")(f)

    return wrap(fn) if fn is not None else wrap


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _work_item(w, nb, ng, nblk, epg, align=1):
    """(batch, group, first channel, channel count) of work item w; blocks are multiples of `align` channels."""
    b, gi, k = w // (ng * nblk), (w // nblk) % ng, w % nblk
    eb = align * -(-(epg // align) // nblk)
    e0 = gi * epg + k * eb
    return b, gi, e0, max(0, min(eb, gi * epg + epg - e0))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy()


@njit(parallel=True, cache=False)
def _touch_pool(out):
    for i in prange(out.shape[0]):
        out[i] = i


_pool_started = False


def _threads() -> int:
    """Follow torch's thread count (the caller's choice), within numba's pool.

    Starting numba's OpenMP pool sets the process-wide OpenMP thread count to numba's maximum, which is also
    torch's: a process that asked torch for 1 thread would silently run its torch ops on all cores from the first
    fused call on (measured: two 1-thread training processes on 2 cores ran 5x slower). The pool is started once,
    here, and torch's count put back.
    """
    global _pool_started
    want = torch.get_num_threads()
    if not _pool_started:
        _touch_pool(np.empty(2 * numba.config.NUMBA_NUM_THREADS, dtype=np.int64))
        _pool_started = True
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
    nt = max(1, min(want, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(nt)
    return nt


def _blocks(items: int, channels: int, threads: int) -> int:
    """Channel blocks per (batch, group): enough work items for every thread, blocks as wide as possible."""
    want = 4 * threads if threads > 1 else 1
    if items >= want:
        return 1
    width = -(-channels // min(channels, -(-want // items)))
    return -(-channels // width)  # no empty block


def _setup(first: torch.Tensor, name: str, chunk, chunk_name: str):
    """Checks shared by the fused ops: CPU tensors and a positive checkpoint interval. Returns the interval and a
    cast to the compute dtype (float32 / float64 as given, other floating dtypes in float32), contiguous."""
    if first.device.type != "cpu":
        raise ValueError(f"{name}: the fused kernel needs CPU tensors, got device {first.device}")
    L = DEFAULT_CHUNK if chunk is None else int(chunk)
    if L < 1:
        raise ValueError(f"{chunk_name}: expected a positive int, got {chunk!r}")
    cdt = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32
    return L, (lambda v: None if v is None else v.to(cdt).contiguous())
