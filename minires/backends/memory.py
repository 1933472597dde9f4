"""Large arrays without page faults: freed memory stays in the process for the next array.

A training step allocates and frees arrays of the same few sizes over and over (an 8 MB
activation per layer at batch 128). glibc's malloc serves blocks above its mmap threshold (128 KB
to 32 MB; it adapts) with fresh pages from the kernel and returns them on free, and it gives back
the top of its heap when more than the trim threshold is free there: either way the next array
starts on new pages, and the first touch of each 4 KB page is a page fault. That made the ops
that only stream through memory (ReLU, the residual add, batchnorm) 2-4x slower and a ResNet-20
training step 20% slower (benchmarks/PROFILE.md). So minires raises both thresholds, and freed
arrays are reused, as PyTorch's CPU caching allocator does with its own blocks. The process keeps
its peak memory instead of returning it; MINIRES_KEEP_MEMORY=0 leaves malloc as it was.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to 32 MB come from the heap
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GB free at the top of the heap


def keep_freed_memory():
    """Raise glibc malloc's mmap and trim thresholds; True if it took them. Elsewhere (macOS,
    Windows, musl) nothing changes: their allocators decide for themselves."""
    if os.environ.get("MINIRES_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl, say): its own rules
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
