"""Keep freed memory in the process: glibc's allocator otherwise returns every large tensor's
pages to the kernel (mmap / trim) and faults them in again, zero-filled, on the next
allocation; for the simulator's many short-lived (N, d) tensors that costs more than the maths
(measured: an out-of-place add on 47 MB arrays, 2.7 -> 6.5 GB/s; a tuning round of the bench 2x faster).

Not switched on by any command: with it, a long bench run's helper process grew to 17.8 GB
resident on a 24 GB machine (4.2 GB after its first 10 minutes) and starved the tests running
beside it; whether heap fragmentation or the working set of its late test runs is to blame was
not isolated.
``benchmarks/train_step.py --malloc keep`` measures it; opt in from your own scripts."""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it (glibc only; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
