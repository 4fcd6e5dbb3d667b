"""The hash stage as plain Python: read each blob once, extract features, keep a thumbnail.

Pillow's decoder, OpenCV and the JPEG encoder release the GIL, so a thread pool
uses every core without pickling images between processes.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from dedup_assets.sources import BlobChangedError, BlobSource
from dedup_assets.storage import StorageLayout, write_bytes_atomic
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


def _failure_reason(error: Exception) -> str:
    if isinstance(error, (DecodeError, BlobChangedError, PermissionError)):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return "blob no longer exists in the source"
    return f"{type(error).__name__}: {error}"


def hash_blobs(
    source: BlobSource,
    inventory: pl.DataFrame,
    layout: StorageLayout,
    workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> HashStageResult:
    """Hash every blob of an inventory; failures carry a reason instead of raising."""
    started = time.perf_counter()
    names = inventory["blob_name"].to_list()
    etags = inventory["etag"].to_list()
    workers = workers or os.cpu_count() or 1

    def process(index: int) -> tuple[int, ImageFeatures | None, str | None]:
        try:
            features = extract_features(source.read_bytes(names[index], expected_etag=etags[index]))
            thumbnail = layout.thumbnail_path(features.content_hash)
            if not thumbnail.exists():  # keyed by content: identical copies share one file
                write_bytes_atomic(features.thumbnail_jpeg, thumbnail)
            return index, features, None
        except Exception as error:  # recorded per blob; one bad file never fails the batch
            return index, None, _failure_reason(error)

    rows: list[tuple] = []
    failures: list[dict] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (index, features, reason) in enumerate(pool.map(process, range(len(names))), 1):
            if features is None:
                failures.append({"blob_name": names[index], "stage": STAGE, "reason": reason})
            else:
                rows.append((
                    names[index], etags[index], features.content_hash, features.format,
                    features.width, features.height, features.bytes, features.jpeg_quality,
                    features.sharpness, features.wavelet_hash, features.color_signature,
                    str(layout.thumbnail_path(features.content_hash).relative_to(layout.home)),
                ))
            if on_progress:
                on_progress(done, len(names))
    hashes = _rows_to_frame(rows)
    return HashStageResult(hashes, failures, time.perf_counter() - started)


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
