"""The hash stage's worker side: read, decode and hash one blob, store its thumbnail.

Apart from `hash_stage` so that a worker process imports only what it runs (OpenCV,
Pillow, NumPy): the stage's own module needs Polars and fsspec, which cost each worker
~0.1 s at every pool's start, and Polars starts threads when imported, which the
forkserver must not hold when it forks the workers (it preloads this module).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from dedup_assets.local_files import thumbnail_key, write_bytes_atomic
from dedup_assets.sources import BlobChangedError, BlobOfflineError, BlobSource, SourceUnavailableError
from dedup_assets.vision.decode import DecodeError, header_problem
from dedup_assets.vision.features import ImageFeatures, extract_features


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a blob has no features; `offline` when it is stored where it cannot be read
    until restored (an archive tier), so that its batch runs again once it can be;
    `source_down` when the source, not the blob, failed (`SourceUnavailableError`)."""

    reason: str
    offline: bool = False
    source_down: bool = False


def failure_reason(error: BaseException) -> str:
    if isinstance(error, (DecodeError, BlobChangedError, BlobOfflineError, SourceUnavailableError,
                          PermissionError)):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return "blob no longer exists in the source"
    return f"{type(error).__name__}: {error}"


def failure(error: BaseException) -> Failure:
    return Failure(failure_reason(error), offline=isinstance(error, BlobOfflineError),
                   source_down=isinstance(error, SourceUnavailableError))


# Set in each worker process by `start_worker`, so tasks carry only blob names.
_worker: dict = {}


def start_worker(source: BlobSource | None, thumbnail_root: str | None) -> None:
    """`thumbnail_root`: the local data root thumbnails are written under; None for a
    remote one (they go back to the stage's process, which uploads them)."""
    _worker["source"] = source
    _worker["thumbnail_root"] = thumbnail_root


# A worker lives for one batch, so the fragmentation that the 128 KB mmap threshold keeps
# out of a long run's process (dedup_assets.memory) ends with it: up to this size an
# image's blocks (its bytes, its reduced decode) reuse the worker's heap instead of being
# mapped and faulted in afresh for every image (66 page faults and 0.12 ms of 2.7 ms per
# 1200-px JPEG).
WORKER_MMAP_THRESHOLD = 4 * 1024 * 1024


def start_worker_process(source: BlobSource | None, thumbnail_root: str | None) -> None:
    import cv2

    from dedup_assets.memory import fix_mmap_threshold

    # One process per core already: OpenCV's own threads in each would oversubscribe them,
    # and so would LibRaw's OpenMP team (a raw file without a usable preview is rendered by
    # it: 2 threads here, one per core), which reads this when rawpy is first imported.
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    fix_mmap_threshold(WORKER_MMAP_THRESHOLD)
    start_worker(source, thumbnail_root)


# A blob listed larger than this is read whole only once its first HEAD_BYTES show it may
# be an image: a 1.5 GB video in the container had been downloaded (3.5 GB peak) to be
# recorded as "not a recognised image format". Images this large are print masters.
READ_HEAD_FIRST_ABOVE = 16 * 2**20
HEAD_BYTES = 64 * 2**10


def read_blob(source: BlobSource, name: str, etag: str, size: int | None) -> bytes:
    """A blob's bytes; a large one's only if its head does not rule out an image (else a
    DecodeError that says what it is)."""
    if size and size > READ_HEAD_FIRST_ABOVE:
        problem = header_problem(source.read_head(name, HEAD_BYTES, expected_etag=etag))
        if problem:
            raise DecodeError(f"{problem}; told from its first {HEAD_BYTES // 1024} KB, "
                              f"the rest of its {size / 2**20:,.0f} MB not read")
    return source.read_bytes(name, expected_etag=etag)


def hash_one(name: str, etag: str, size: int | None = None) -> ImageFeatures | Failure:
    """Read, decode and hash one blob and store its thumbnail; why not, on failure."""
    try:
        data = read_blob(_worker["source"], name, etag, size)
    except Exception as error:
        return failure(error)
    return hash_bytes(data)


def hash_bytes(data: bytes) -> ImageFeatures | Failure:
    """Features of one image. Its thumbnail is written here on a local data root; on a
    remote one it comes back for `ThumbnailUploads` (a worker waiting on the network
    would leave its core idle)."""
    try:
        features = extract_features(data)
        root = _worker["thumbnail_root"]
        if root is None:
            return features
        path = Path(root, thumbnail_key(features.content_hash))
        if not path.exists():  # keyed by content: identical copies share one file
            write_bytes_atomic(features.thumbnail_jpeg, path)
        return dataclasses.replace(features, thumbnail_jpeg=b"")
    except Exception as error:  # recorded per blob; one bad file never fails the batch
        return failure(error)
