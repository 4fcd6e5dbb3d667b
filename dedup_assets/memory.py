"""Keeping a long-running process's memory flat, batch after batch.

A long `dedup run` (or a Celery worker) runs batch after batch in one process, and the
heavy stages allocate from many threads (verification and hash pools, ONNX Runtime,
OpenMP, Polars). glibc gives each allocating thread its own arena, up to 8 per core, and
keeps what they free:
- `release_freed_memory()` (glibc `malloc_trim`) returns freed pages after each heavy
  stage: 742 MB after 1k images, 2.3 GB after 10k before it (measured with
  bench/memory_scale.py);
- `limit_malloc_arenas()` caps the arenas at one per core: with glibc's default (13 in
  use on 2 cores here) the fragmentation left after trimming still grew ~8 MB per batch;
  with one per core the resident size stays flat (docs/performance.md).
- `fix_mmap_threshold()` keeps blocks from 128 KB up mapped on their own: glibc raises
  that threshold each time a mapped block is freed (up to 32 MB), after which such blocks
  (images, descriptor tables, ONNX tensors) are carved from the arenas between
  long-lived ones; verification called again and again on one batch then kept ~5 MB
  more per call, with the threshold fixed none.
- `raise_trim_threshold()` lets an arena keep up to 4 MB free at its top: fixing the
  mmap threshold also froze glibc's trim threshold at 128 KB, so nearly every free at
  an arena's top gave pages back to the kernel, and the next allocation faulted them in
  again (verification of the cascade bench: 8.2 → 7.8 s, half the page faults). What an
  arena keeps there serves the next blocks, large ones too, before a new mapping, and
  goes back with `release_freed_memory()` after each heavy stage.
All are no-ops off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

from dedup_assets.vision.cores import usable_cores

_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value; set explicitly, it stays there
# From 1 MB the page faults stopped falling (512 KB: most of them came back).
TRIM_THRESHOLD = 4 * 1024 * 1024


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


def _mallopt_unless_set(parameter: int, value: int, variable: str) -> int | None:
    """glibc's `mallopt(parameter, value)`, unless the operator set the environment
    variable glibc reads for it at start (theirs wins): the value set, or None where
    nothing was changed."""
    libc = _libc()
    if libc is None or variable in os.environ:
        return None
    return value if libc.mallopt(parameter, value) == 1 else None


def limit_malloc_arenas(arenas: int | None = None) -> int | None:
    """Cap glibc's malloc arenas (default: one per usable core) for threads that start
    allocating from now on. An operator's MALLOC_ARENA_MAX wins."""
    return _mallopt_unless_set(_M_ARENA_MAX, max(2, arenas or usable_cores()), "MALLOC_ARENA_MAX")


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> int | None:
    """Fix glibc's mmap threshold (setting it turns off its rise as mapped blocks are
    freed). An operator's MALLOC_MMAP_THRESHOLD_ wins."""
    return _mallopt_unless_set(_M_MMAP_THRESHOLD, threshold, "MALLOC_MMAP_THRESHOLD_")


def raise_trim_threshold(threshold: int = TRIM_THRESHOLD) -> int | None:
    """How much free memory an arena keeps at its top instead of returning it at once
    (glibc's default 128 KB, fixed there once the mmap threshold is set). An operator's
    MALLOC_TRIM_THRESHOLD_ wins."""
    return _mallopt_unless_set(_M_TRIM_THRESHOLD, threshold, "MALLOC_TRIM_THRESHOLD_")


def tune_malloc() -> None:
    """The allocator settings, before any stage starts its threads."""
    limit_malloc_arenas()
    fix_mmap_threshold()
    raise_trim_threshold()
