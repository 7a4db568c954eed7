"""Keep the learner's freed memory for reuse instead of handing it back to the OS after every call.

PyTorch's CPU tensors come from ``malloc``.  glibc serves blocks above its mmap threshold (128 KiB at first,
raised as large blocks are freed) with fresh ``mmap`` pages and returns the top of its heap to the OS once it
exceeds the trim threshold, so a learner that allocates the same few-megabyte activations on every Adam step
pays page faults for them each time: on RL²'s update a [250, 20, 256] float32 element-wise op took 1.4 ms with
fresh pages against 0.35 ms on reused ones.  :func:`keep_freed_memory` raises both thresholds (``mallopt``), as
PyTorch's CPU performance guide's advice to use jemalloc or tcmalloc does for the same reason;
``benchmarks/dev/gru_backward.py`` measures the difference.  It changes where memory comes from, never a
number computed; it does nothing where the C library is not glibc, or when the environment sets
``METARL_KEEP_FREED_MEMORY=0`` (e.g. with jemalloc or tcmalloc preloaded, or to measure without it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from metarl.native import env_switch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# blocks up to 32 MiB (glibc's default ceiling for its dynamic threshold) come from the heap
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 256 * 2**20  # free memory at the heap's top is returned to the OS only beyond 256 MiB

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); True where they were set."""
    global _done
    if _done is None:
        on = env_switch("METARL_KEEP_FREED_MEMORY", "off", "on")
        _done = False
        if sys.platform.startswith("linux") and on:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # musl and other C libraries without mallopt
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _done
