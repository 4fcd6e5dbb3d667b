"""The hash stage as plain Python: read each blob once, extract features, keep a thumbnail.

Each worker process reads, decodes and hashes whole blobs, so image bytes never cross a
process boundary and only the small feature records come back.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import polars as pl

from dedup_assets.hash_worker import (Failure, failure, failure_reason, hash_bytes, hash_one, read_blob, start_worker,
                                     start_worker_process)
from dedup_assets.sources import BlobSource, SourceDownRun
from dedup_assets.storage import StorageLayout
from dedup_assets.vision.color import SIGNATURE_SIZE
from dedup_assets.vision.cores import usable_cores
from dedup_assets.vision.features import ImageFeatures

STAGE = "wavelet_hashes"

HASH_SCHEMA = {
    "blob_name": pl.String,
    "etag": pl.String,
    "content_hash": pl.String,
    "format": pl.String,
    "width": pl.Int32,
    "height": pl.Int32,
    # Inside uniform bars (letterboxing, padding); added later: null in older partitions.
    "picture_width": pl.Int32,
    "picture_height": pl.Int32,
    "bytes": pl.Int64,
    "jpeg_quality": pl.Int16,
    "sharpness": pl.Float32,
    "wavelet_hash": pl.UInt64,
    "color_signature": pl.Array(pl.UInt8, SIGNATURE_SIZE),
    "thumbnail": pl.String,
    # Several pictures in one file: an animation (GIF, WebP, APNG of more than one frame)
    # or a document of several pages (TIFF); added later: null in older partitions (read
    # as one picture).
    "multi_picture": pl.Boolean,
}


@dataclass
class HashStageResult:
    hashes: pl.DataFrame
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class ThumbnailUploads:
    """Thumbnails stored from this process in the background, `chunk` per round of
    concurrent requests, while the workers go on decoding. Each worker used to check
    and upload its own (a HEAD and a PUT per image): behind 20 ms of latency the stage
    ran at 0.09x its local speed (`bench/azure_io.py`). No existence check: a thumbnail
    is keyed by its content, so storing it again writes the same bytes."""

    def __init__(self, layout: StorageLayout, chunk: int = 64, in_flight: int = 2):
        self.layout = layout
        self.chunk = chunk
        self.in_flight = in_flight
        self.pending: dict[str, bytes] = {}
        self.seen: set[str] = set()
        self.failed: dict[str, str] = {}  # thumbnail key -> reason
        self.uploading: deque[Future] = deque()
        self.pool = ThreadPoolExecutor(in_flight, thread_name_prefix="thumbnail-upload")

    def add(self, key: str, data: bytes) -> None:
        if key in self.seen:
            return
        self.seen.add(key)
        self.pending[key] = data
        if len(self.pending) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.uploading.append(self.pool.submit(self._store, self.pending))
            self.pending = {}
        while len(self.uploading) > self.in_flight:  # bounded memory: wait for the oldest
            self.uploading.popleft().result()

    def _store(self, files: dict[str, bytes]) -> None:
        try:
            self.layout.write_many_bytes(files)
        except Exception:  # find which ones failed, each alone
            for key, data in files.items():
                try:
                    self.layout.write_many_bytes({key: data})
                except Exception as error:
                    self.failed[key] = "thumbnail not stored: " + failure_reason(error).splitlines()[0]

    def finish(self) -> dict[str, str]:
        """Wait for every upload; the reason per thumbnail key that could not be stored."""
        self._flush()
        while self.uploading:
            self.uploading.popleft().result()
        self.pool.shutdown()
        return self.failed


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
    thumbnail_root = layout.data_root if layout.is_local else None  # written by the workers
    if workers <= 1:
        return _InlineExecutor(start_worker, (source, thumbnail_root))
    # Processes, because decoding and hashing partly hold the GIL; forkserver, because
    # forking a process that runs Dagster's threads is unsafe. The forkserver imports the
    # workers' module once per process: a later pool's workers start with it imported.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dedup_assets.hash_worker"])
    return ProcessPoolExecutor(size or workers, mp_context=context, initializer=start_worker_process,
                               initargs=(source, thumbnail_root))


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
    sizes = inventory["size"].fill_null(0).to_list()
    workers = workers or usable_cores()
    rows: list[tuple] = []
    failures: list[dict] = []
    uploads = ThumbnailUploads(layout)
    source_down = SourceDownRun(len(names), "downloads", "so the batch stops instead of recording its blobs as "
                                "failed; it is run again by the hourly backfill schedule or `dedup run`")
    try:
        for index, outcome in enumerate(_outcomes(source, names, etags, sizes, workers, layout)):
            source_down.note(outcome.reason if isinstance(outcome, Failure) and outcome.source_down else None)
            if isinstance(outcome, Failure):
                failures.append({"blob_name": names[index], "stage": STAGE, "reason": outcome.reason,
                                 "offline": outcome.offline})
            else:
                thumbnail = layout.thumbnail_key(outcome.content_hash)
                if outcome.thumbnail_jpeg:  # remote data root: stored from here
                    uploads.add(thumbnail, outcome.thumbnail_jpeg)
                rows.append((
                    names[index], etags[index], outcome.content_hash, outcome.format,
                    outcome.width, outcome.height, outcome.picture_width, outcome.picture_height,
                    outcome.bytes, outcome.jpeg_quality,
                    outcome.sharpness, outcome.wavelet_hash, outcome.color_signature, thumbnail, outcome.multi_picture,
                ))
            if on_progress:
                on_progress(index + 1, len(names))
    finally:
        not_stored = uploads.finish()
    # A blob whose thumbnail could not be stored cannot reach the later stages: a failure.
    thumbnail_column = list(HASH_SCHEMA).index("thumbnail")
    failures += [{"blob_name": row[0], "stage": STAGE, "reason": not_stored[row[thumbnail_column]]}
                 for row in rows if row[thumbnail_column] in not_stored]
    rows = [row for row in rows if row[thumbnail_column] not in not_stored]
    return HashStageResult(_rows_to_frame(rows), failures, time.perf_counter() - started)


CHUNK = 8  # blobs per task sent to a worker


def _outcomes(source: BlobSource, names: list[str], etags: list[str], sizes: list[int], workers: int,
              layout: StorageLayout) -> Iterator[ImageFeatures | Failure]:
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
                    outcomes = _download_then_hash(source, names[done:], etags[done:], sizes[done:], pool, workers)
                else:
                    outcomes = pool.map(hash_one, names[done:], etags[done:], sizes[done:], chunksize=CHUNK)
                for outcome in outcomes:
                    yield outcome
                    done += 1
        except BrokenProcessPool:
            for index in range(done, min(done + 2 * workers * CHUNK, len(names))):
                yield _isolated(source, names[index], etags[index], sizes[index], layout)
                done += 1


def _isolated(source: BlobSource, name: str, etag: str, size: int, layout: StorageLayout) -> ImageFeatures | Failure:
    """One blob in a fresh single worker, read where the bulk path reads it."""
    remote = getattr(source, "is_remote", False)
    try:
        data = read_blob(source, name, etag, size) if remote else None
    except Exception as error:
        return failure(error)
    try:
        with _worker_pool(2, None if remote else source, layout, size=1) as pool:
            task = pool.submit(hash_bytes, data) if remote else pool.submit(hash_one, name, etag, size)
            return task.result()
    except BrokenProcessPool:
        return Failure("the decoder process crashed on this file (killed or out of memory); not decoded")


# Bytes of downloaded blobs held here at once: a blob is held from its download until its
# decode returns (the pool keeps a task's arguments). By count alone (32 in flight), 40
# TIFF masters of 57 MB took the stage's process from 0.4 to 2.3 GB. One blob is always
# let through, however large.
DOWNLOAD_BUDGET = 256 * 2**20


def _download_then_hash(source: BlobSource, names: list[str], etags: list[str], sizes: list[int],
                        pool: Executor, workers: int) -> Iterator[ImageFeatures | Failure]:
    """Downloads with bounded concurrency feeding the decode workers, in order, with a
    bounded number of blobs, and of bytes (DOWNLOAD_BUDGET), in memory at any time."""
    concurrency = max(1, getattr(source, "download_concurrency", 8))

    def download(index: int) -> bytes | Failure:
        try:
            return read_blob(source, names[index], etags[index], sizes[index])
        except Exception as error:
            return failure(error)

    downloads: deque[tuple[int, Future]] = deque()
    decodes: deque[tuple[int, Future | Failure]] = deque()
    held = 0  # listed bytes of the blobs in both queues
    upcoming = 0
    downloader = ThreadPoolExecutor(concurrency)
    try:
        while True:
            while (upcoming < len(names) and len(downloads) < 2 * concurrency
                   and (held == 0 or held + sizes[upcoming] <= DOWNLOAD_BUDGET)):
                held += sizes[upcoming]
                downloads.append((sizes[upcoming], downloader.submit(download, upcoming)))
                upcoming += 1
            while downloads and (downloads[0][1].done() or len(decodes) < 2 * workers):
                size, downloading = downloads.popleft()
                data = downloading.result()
                decodes.append((size, data if isinstance(data, Failure) else pool.submit(hash_bytes, data)))
            if not decodes:
                if not downloads:
                    return
                continue
            size, head = decodes.popleft()
            outcome = head if isinstance(head, Failure) else head.result()
            held -= size
            yield outcome
    finally:  # stopped early (the source is down): the queued downloads need not run
        downloader.shutdown(cancel_futures=True)


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
