"""The HTTP server process: uvicorn as ``serve`` runs it.

``tune_allocator()`` makes large freed blocks go back to the operating system: a 10 MB
answer passes through the proxy as a few 10 MB strings, and glibc would otherwise keep
such blocks in its heap after the first one (it raises its mmap threshold on the first
big free), so the process would stay tens of megabytes larger after a big answer.
"""

from __future__ import annotations

import ctypes

BIG_BLOCK_BYTES = 1024 * 1024
"""Allocations from this size up are mapped separately and returned when freed."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold; a no-op (False) on other C libraries."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, BIG_BLOCK_BYTES))
