"""The batch ledger: which blob version belongs to which ingestion batch.

Each batch is one Parquet manifest, `$DEDUP_HOME/batches/<batch>.parquet`, written
atomically before its Dagster partition is added. The ledger, not the listing order,
decides what is new: a blob version (name + etag) already in any manifest is never
batched again, so registration is exactly-once across restarts, reordered listings and
files copied in with old timestamps, while a blob overwritten with new content (new
etag) is batched again.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator

import polars as pl

from dedup_assets.sources import BlobInfo
from dedup_assets.storage import StorageLayout, write_parquet_atomic

MANIFEST_SCHEMA = {
    "blob_name": pl.String,
    "size": pl.Int64,
    "etag": pl.String,
    "last_modified": pl.Datetime("us", "UTC"),
}
_BATCH_KEY = re.compile(r"^batch-(\d{6,})$")


def batch_key(sequence: int) -> str:
    return f"batch-{sequence:06d}"


def batch_sequence(key: str) -> int:
    match = _BATCH_KEY.match(key)
    if not match:
        raise ValueError(f"not a batch key: {key!r}")
    return int(match.group(1))


class BatchLedger:
    def __init__(self, layout: StorageLayout):
        self.layout = layout
        self.directory = layout.batches_dir

    def manifest_path(self, key: str):
        return self.directory / f"{key}.parquet"

    def batch_keys(self) -> list[str]:
        if not self.directory.exists():
            return []
        keys = [p.stem for p in self.directory.glob("batch-*.parquet")]
        return sorted(keys, key=batch_sequence)

    def read_manifest(self, key: str) -> pl.DataFrame:
        path = self.manifest_path(key)
        if not path.exists():
            raise FileNotFoundError(f"batch {key} has no manifest in {self.directory}")
        return pl.read_parquet(path)

    def known_versions(self) -> pl.DataFrame:
        if not self.batch_keys():
            return pl.DataFrame(schema={"blob_name": pl.String, "etag": pl.String})
        return (
            pl.scan_parquet(self.directory / "batch-*.parquet")
            .select("blob_name", "etag")
            .unique()
            .collect()
        )

    @contextlib.contextmanager
    def _locked(self):
        # The sensor and `dedup run` may register at the same time.
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def register(
        self,
        blobs: Iterable[BlobInfo],
        max_batch_size: int,
        settle_seconds: float = 0.0,
        now: datetime | None = None,
    ) -> list[str]:
        """Cut the blob versions not yet in any batch into new batches; return their keys.

        Blobs modified within the last `settle_seconds` are left for a later call: they
        may still be being written.
        """
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        now = now or datetime.now(timezone.utc)
        cutoff = now - timedelta(seconds=settle_seconds)
        with self._locked():
            listing = _to_frame(blobs)
            settled = listing.filter(pl.col("last_modified") <= cutoff)
            fresh = (
                settled.join(self.known_versions(), on=["blob_name", "etag"], how="anti")
                .unique(subset=["blob_name", "etag"], keep="first")
                .sort("last_modified", "blob_name")
            )
            existing = self.batch_keys()
            next_sequence = batch_sequence(existing[-1]) + 1 if existing else 1
            keys = []
            for offset in range(0, fresh.height, max_batch_size):
                key = batch_key(next_sequence + len(keys))
                write_parquet_atomic(fresh.slice(offset, max_batch_size), self.manifest_path(key))
                keys.append(key)
            return keys


def _to_frame(blobs: Iterable[BlobInfo]) -> pl.DataFrame:
    def rows() -> Iterator[tuple]:
        for blob in blobs:
            yield (blob.name, blob.size, blob.etag, blob.last_modified)

    return pl.DataFrame(list(rows()), schema=MANIFEST_SCHEMA, orient="row")
