"""Giving freed memory back to the operating system between batches.

A long `dedup run` (or a Celery worker) runs batch after batch in one process. The
verification and hash stages allocate from several threads; glibc keeps what they free
in per-thread arenas instead of returning it, so the resident size ratcheted up by
~150 MB per 200-image batch although nothing leaked (measured: 742 MB after 1k images,
2.3 GB after 10k; `malloc_trim` brought it back to the baseline every time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> bool:
    """Return freed heap memory to the OS (glibc's malloc_trim); False where unavailable."""
    libc = _libc()
    if libc is None:  # musl, macOS: nothing to do
        return False
    libc.malloc_trim(0)
    return True
