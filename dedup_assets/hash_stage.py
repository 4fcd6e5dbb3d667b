"""The hash stage as plain Python: read each blob once, extract features, keep a thumbnail.

Each worker process reads, decodes and hashes whole blobs, so image bytes never cross a
process boundary and only the small feature records come back.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import polars as pl

from dedup_assets.sources import BlobChangedError, BlobSource
from dedup_assets.storage import StorageLayout
from dedup_assets.vision.color import SIGNATURE_SIZE
from dedup_assets.vision.decode import DecodeError
from dedup_assets.vision.features import ImageFeatures, extract_features

STAGE = "wavelet_hashes"

HASH_SCHEMA = {
    "blob_name": pl.String,
    "etag": pl.String,
    "content_hash": pl.String,
    "format": pl.String,
    "width": pl.Int32,
    "height": pl.Int32,
    "bytes": pl.Int64,
    "jpeg_quality": pl.Int16,
    "sharpness": pl.Float32,
    "wavelet_hash": pl.UInt64,
    "color_signature": pl.Array(pl.UInt8, SIGNATURE_SIZE),
    "thumbnail": pl.String,
}


@dataclass
class HashStageResult:
    hashes: pl.DataFrame
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def failure_reason(error: BaseException) -> str:
    if isinstance(error, (DecodeError, BlobChangedError, PermissionError)):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return "blob no longer exists in the source"
    return f"{type(error).__name__}: {error}"


# Set in each worker process by `_start_worker`, so tasks carry only blob names.
_worker: dict = {}


def _start_worker(source: BlobSource, layout: StorageLayout) -> None:
    _worker["source"] = source
    _worker["layout"] = layout


def _hash_one(name: str, etag: str) -> ImageFeatures | str:
    """Read, decode and hash one blob and store its thumbnail; a reason string on failure."""
    try:
        data = _worker["source"].read_bytes(name, expected_etag=etag)
    except Exception as error:
        return failure_reason(error)
    return _hash_bytes(data)


def _hash_bytes(data: bytes) -> ImageFeatures | str:
    try:
        features = extract_features(data)
        layout = _worker["layout"]
        path = layout.data_path(layout.thumbnail_key(features.content_hash))
        if not layout.exists(path):  # keyed by content: identical copies share one file
            layout.write_bytes(path, features.thumbnail_jpeg)
        return dataclasses.replace(features, thumbnail_jpeg=b"")
    except Exception as error:  # recorded per blob; one bad file never fails the batch
        return failure_reason(error)


class _InlineExecutor(Executor):
    def __init__(self, initializer, initargs):
        initializer(*initargs)

    def map(self, fn, *iterables, **_):
        return map(fn, *iterables)

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _worker_pool(workers: int, source: BlobSource | None, layout: StorageLayout,
                 size: int | None = None) -> Executor:
    if workers <= 1:
        return _InlineExecutor(_start_worker, (source, layout))
    # Processes, because decoding and hashing partly hold the GIL; forkserver, because
    # forking a process that runs Dagster's threads is unsafe.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dedup_assets.vision.features"])
    return ProcessPoolExecutor(size or workers, mp_context=context, initializer=_start_worker,
                               initargs=(source, layout))


def hash_blobs(
    source: BlobSource,
    inventory: pl.DataFrame,
    layout: StorageLayout,
    workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> HashStageResult:
    """Hash every blob of an inventory; failures carry a reason instead of raising."""
    if workers < 0:
        raise ValueError("workers must be >= 0 (0: one per core)")
    started = time.perf_counter()
    names = inventory["blob_name"].to_list()
    etags = inventory["etag"].to_list()
    workers = workers or os.cpu_count() or 1
    rows: list[tuple] = []
    failures: list[dict] = []
    for index, outcome in enumerate(_outcomes(source, names, etags, workers, layout)):
        if isinstance(outcome, str):
            failures.append({"blob_name": names[index], "stage": STAGE, "reason": outcome})
        else:
            rows.append((
                names[index], etags[index], outcome.content_hash, outcome.format,
                outcome.width, outcome.height, outcome.bytes, outcome.jpeg_quality,
                outcome.sharpness, outcome.wavelet_hash, outcome.color_signature,
                layout.thumbnail_key(outcome.content_hash),
            ))
        if on_progress:
            on_progress(index + 1, len(names))
    return HashStageResult(_rows_to_frame(rows), failures, time.perf_counter() - started)


CHUNK = 8  # blobs per task sent to a worker


def _outcomes(source: BlobSource, names: list[str], etags: list[str], workers: int,
              layout: StorageLayout) -> Iterator[ImageFeatures | str]:
    """Outcomes in inventory order. A worker killed by a file (a decoder crash, the OOM
    killer) breaks the pool: the blobs that were in flight are then retried one at a
    time, each in a fresh worker, so only the culprit is recorded as failed."""
    remote = getattr(source, "is_remote", False)
    done = 0
    while done < len(names):
        try:
            # A remote source's client stays in this process (downloads are I/O:
            # threads); local files are read by the workers themselves.
            with _worker_pool(workers, None if remote else source, layout) as pool:
                if remote:
                    outcomes = _download_then_hash(source, names[done:], etags[done:], pool, workers)
                else:
                    outcomes = pool.map(_hash_one, names[done:], etags[done:], chunksize=CHUNK)
                for outcome in outcomes:
                    yield outcome
                    done += 1
        except BrokenProcessPool:
            for index in range(done, min(done + 2 * workers * CHUNK, len(names))):
                yield _isolated(source, names[index], etags[index], layout)
                done += 1


def _isolated(source: BlobSource, name: str, etag: str, layout: StorageLayout) -> ImageFeatures | str:
    """One blob in a fresh single worker, read where the bulk path reads it."""
    remote = getattr(source, "is_remote", False)
    try:
        data = source.read_bytes(name, expected_etag=etag) if remote else None
    except Exception as error:
        return failure_reason(error)
    try:
        with _worker_pool(2, None if remote else source, layout, size=1) as pool:
            task = pool.submit(_hash_bytes, data) if remote else pool.submit(_hash_one, name, etag)
            return task.result()
    except BrokenProcessPool:
        return "the decoder process crashed on this file (killed or out of memory); not decoded"


def _download_then_hash(source: BlobSource, names: list[str], etags: list[str], pool: Executor,
                        workers: int) -> Iterator[ImageFeatures | str]:
    """Downloads with bounded concurrency feeding the decode workers, in order, with a
    bounded number of blobs in memory at any time."""
    concurrency = max(1, getattr(source, "download_concurrency", 8))

    def download(index: int) -> bytes | str:
        try:
            return source.read_bytes(names[index], expected_etag=etags[index])
        except Exception as error:
            return failure_reason(error)

    downloads: deque[Future] = deque()
    decodes: deque[Future | str] = deque()
    indices = iter(range(len(names)))
    with ThreadPoolExecutor(concurrency) as downloader:
        while True:
            while len(downloads) < 2 * concurrency and (index := next(indices, None)) is not None:
                downloads.append(downloader.submit(download, index))
            while downloads and (downloads[0].done() or len(decodes) < 2 * workers):
                data = downloads.popleft().result()
                decodes.append(data if isinstance(data, str) else pool.submit(_hash_bytes, data))
            if not decodes:
                if not downloads:
                    return
                continue
            head = decodes.popleft()
            yield head if isinstance(head, str) else head.result()


def _rows_to_frame(rows: list[tuple]) -> pl.DataFrame:
    columns = list(zip(*rows)) if rows else [[] for _ in HASH_SCHEMA]
    data = {}
    for (name, dtype), values in zip(HASH_SCHEMA.items(), columns):
        if name == "color_signature":
            matrix = np.stack(values) if values else np.zeros((0, SIGNATURE_SIZE), np.uint8)
            data[name] = pl.Series(name, matrix, dtype=dtype)
        else:
            data[name] = pl.Series(name, list(values), dtype=dtype)
    return pl.DataFrame(data)
