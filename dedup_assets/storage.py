"""Where each kind of output lives under `DEDUP_HOME`, and atomic Parquet writes.

Every asset partition is one Parquet file, `parquet/<asset>/<partition>.parquet`. Writes
go to a hidden temporary file in the same directory and are renamed into place, so a
reader (or the DuckDB views, whose globs only match `*.parquet`) never sees a partial
file, and concurrent runs on different partitions never touch the same file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl

FAILED_BLOBS = "failed_blobs"
FAILED_BLOBS_SCHEMA = {"blob_name": pl.String, "stage": pl.String, "reason": pl.String}


class StorageLayout:
    def __init__(self, home: str | os.PathLike):
        self.home = Path(home)

    @property
    def parquet_root(self) -> Path:
        return self.home / "parquet"

    @property
    def batches_dir(self) -> Path:
        return self.home / "batches"

    @property
    def thumbnails_dir(self) -> Path:
        return self.home / "thumbnails"

    @property
    def review_dir(self) -> Path:
        """The gallery and the keep/drop manifest: what a person opens."""
        return self.home / "review"

    @property
    def catalog_path(self) -> Path:
        return self.home / "dedup.duckdb"

    def asset_dir(self, asset_name: str) -> Path:
        return self.parquet_root / asset_name

    def partition_path(self, asset_name: str, partition_key: str | None) -> Path:
        return self.asset_dir(asset_name) / f"{partition_key or 'all'}.parquet"

    def failures_path(self, stage: str, partition_key: str) -> Path:
        return self.asset_dir(FAILED_BLOBS) / stage / f"{partition_key}.parquet"

    def thumbnail_path(self, content_hash: str) -> Path:
        return self.thumbnails_dir / content_hash[:2] / f"{content_hash}.jpg"

    def write_failures(self, stage: str, partition_key: str, failures: list[dict]) -> int:
        """Replace this stage's failure table for a partition (empty when all succeeded)."""
        from dedup_assets.catalog import ensure_view  # the catalog builds on this module

        frame = pl.DataFrame(failures, schema=FAILED_BLOBS_SCHEMA).with_columns(
            pl.lit(partition_key, dtype=pl.String).alias("batch")
        )
        write_parquet_atomic(frame, self.failures_path(stage, partition_key))
        ensure_view(self, FAILED_BLOBS)
        return frame.height


def _remove_leftovers(path: Path) -> None:
    # A writer killed mid-write (SIGKILL, OOM) leaves its hidden temporary file behind.
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.write_parquet(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
