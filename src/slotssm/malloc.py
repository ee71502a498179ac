"""Opt-in tuning of glibc's allocator for large-tensor CPU work.

glibc's malloc serves every block over M_MMAP_THRESHOLD (at most 32 MiB once its dynamic threshold has grown) with a
fresh mmap and unmaps it on free, so every large temporary of every op page-faults its memory in again (and the kernel
zeroes each page). Turning mmap off for the heap (M_MMAP_MAX = 0) and never trimming it (M_TRIM_THRESHOLD large)
keeps freed blocks for reuse: measured here 2.4-3.6x on the big-tensor scan paths, at the cost of a peak resident
size that is never given back to the system. See docs/kernels.md.

Importing slotssm changes nothing; `tune_malloc()` is an explicit call (the CLI makes it for its own processes).
The environment-variable equivalent, for a process not started by slotssm, is
`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform

log = logging.getLogger("slotssm")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc <malloc.h>
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest value it accepts
DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's own defaults, restored by tune_malloc(False)
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024


@functools.cache
def _libc():
    """glibc's mallopt, or None on another C library / platform."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def tune_malloc(enable: bool = True) -> bool:
    """Keep freed heap memory for reuse (enable=True) or restore glibc's defaults (enable=False).

    Returns whether the settings were applied (False: not glibc, or mallopt refused). Process-wide and immediate;
    it affects allocations made after the call.
    """
    mallopt = _libc()
    if mallopt is None:
        log.info("slotssm: malloc tuning skipped (not glibc)")
        return False
    if enable:
        settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    else:  # setting M_MMAP_THRESHOLD back also re-enables glibc's dynamic threshold only at its next restart
        settings = ((M_MMAP_MAX, DEFAULT_MMAP_MAX), (M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD),
                    (M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD))
    ok = all(mallopt(param, value) == 1 for param, value in settings)
    log.info("slotssm: malloc %s (%s)", "tuned: no mmap, no trim" if enable else "restored to glibc defaults",
             "applied" if ok else "mallopt refused")
    return ok
