"""Files on a local disk written whole, and where a thumbnail lives under a data root.

Standard library only: the hash stage's worker processes store thumbnails with it, and a
module importing Polars or fsspec cost each of them ~0.1 s at every pool's start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from pathlib import Path
from typing import Iterator


def thumbnail_key(content_hash: str) -> str:
    """A thumbnail's path relative to the data root (what the `thumbnail` column holds)."""
    return f"thumbnails/{content_hash[:2]}/{content_hash}.jpg"


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to: renamed over `path` when the block
    succeeds, removed when it fails, so readers see the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: Path, wait: bool = True) -> Iterator[None]:
    """This machine's exclusive lock on the file `path` (created with its folder) for the
    block; without `wait`, BlockingIOError when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_bytes_atomic(data: bytes, path: Path) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(data)
