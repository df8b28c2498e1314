"""Tell glibc's allocator to keep freed memory: the in-process form of the Makefile's MALLOC_* variables.

PyTorch's CPU tensors come and go in large blocks; by default glibc returns
them to the kernel (mmap/trim) and page-faults them back on the next batch,
which costs these VMs about a third of a forward pass (docs/toolchain.md: 30 -> 46
img/s on B0). Commands run without the Makefile (main_imagenet.py, python -m
golden) call this first so their speed does not depend on the caller's shell.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Apply the settings; False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, 32 << 20)   # glibc's largest allowed value on 64-bit
    ok &= mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    ok &= mallopt(M_TOP_PAD, 1 << 30)
    return bool(ok)
