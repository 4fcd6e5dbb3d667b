"""The batch ledger: which blob version belongs to which ingestion batch.

Each batch is one Parquet manifest, `<data root>/batches/<batch>.parquet`, written
atomically before its Dagster partition is added. The ledger, not the listing order,
decides what is new: a blob version (name + etag) already in any manifest is never
batched again, so registration is exactly-once across restarts, reordered listings and
files copied in with old timestamps, while a blob overwritten with new content (new
etag) is batched again.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl
import pyarrow.parquet as pq

from dedup_assets.local_files import exclusive_lock, replaced_atomically, write_bytes_atomic
from dedup_assets.settings import SetupError
from dedup_assets.sources import BlobInfo, SourceUnavailableError
from dedup_assets.storage import StorageLayout

MANIFEST_SCHEMA = {
    "blob_name": pl.String,
    "size": pl.Int64,
    "etag": pl.String,
    "last_modified": pl.Datetime("us", "UTC"),
    "content_md5": pl.String,
}
# A listing also says which blobs are offline (an archive tier): not kept in the manifests,
# whose batches are fixed; it decides which blobs found offline are readable again.
LISTING_SCHEMA = {**MANIFEST_SCHEMA, "offline": pl.Boolean}
READABLE_AGAIN_SCHEMA = {"blob_name": pl.String, "etag": pl.String, "batch": pl.String}
LISTING_CHUNK = 50_000  # rows held in memory while a listing streams to disk
TOMBSTONE_SCHEMA = {"blob_name": pl.String, "etag": pl.String, "batch": pl.String,
                    "deleted_at": pl.Datetime("us", "UTC")}
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

    def manifest_path(self, key: str) -> str:
        return f"{self.directory}/{key}.parquet"

    def batch_keys(self) -> list[str]:
        keys = [path.rsplit("/", 1)[-1].removesuffix(".parquet")
                for path in self.layout.glob(f"{self.directory}/batch-*.parquet")]
        return sorted(keys, key=batch_sequence)

    def read_manifest(self, key: str) -> pl.DataFrame:
        path = self.manifest_path(key)
        if not self.layout.exists(path):
            raise FileNotFoundError(f"batch {key} has no manifest in {self.layout.uri(self.directory)}")
        return self.layout.read_parquet(path)

    def _manifests(self, columns: list[str]) -> pl.DataFrame:
        """These columns of every manifest, with the batch each row belongs to."""
        keys = self.batch_keys()
        frame = self.layout.read_parquet_many([self.manifest_path(k) for k in keys], columns, file_stem_column="batch")
        return frame if keys else pl.DataFrame(schema={**{c: MANIFEST_SCHEMA[c] for c in columns}, "batch": pl.String})

    @property
    def tombstones_path(self) -> str:
        return f"{self.directory}/tombstones.parquet"

    def tombstones(self) -> pl.DataFrame:
        """Blob versions that disappeared from the source, with their batch and when."""
        if not self.layout.exists(self.tombstones_path):
            return pl.DataFrame(schema=TOMBSTONE_SCHEMA)
        return self.layout.read_parquet(self.tombstones_path)

    def _record_deletions(self, listing: list[Path], now: datetime) -> None:
        """The latest batched version of each name gets a tombstone once the listing no longer
        shows it: the blob was deleted, or overwritten (its name listed with another etag).
        Either way the content its batch decided on is gone, and a group that kept it, or
        dropped copies for it, is decided again when that batch runs again."""
        latest = self._manifests(["blob_name", "etag"]).lazy().sort("batch").group_by("blob_name").last()
        existing = self.tombstones()
        gone = (
            latest.join(pl.scan_parquet(listing).select("blob_name", "etag"), on=["blob_name", "etag"], how="anti")
            .join(existing.lazy().select("blob_name", "etag"), on=["blob_name", "etag"], how="anti")
            .with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("deleted_at"))
            .collect()
        )
        if gone.height or not self.layout.exists(self.tombstones_path):
            self.layout.write_parquet(pl.concat([existing, gone.select(list(TOMBSTONE_SCHEMA))]), self.tombstones_path)

    def known_versions(self) -> pl.DataFrame:
        return self._manifests(["blob_name", "etag"]).select("blob_name", "etag").unique()

    @property
    def readable_again_path(self) -> str:
        return f"{self.directory}/readable_again.parquet"

    def readable_again(self) -> pl.DataFrame:
        """Blob versions a stage found offline (an archive tier) that the latest listing
        shows readable, with their batch. Restoring a blob changes no etag, so for the
        ledger it is no new version: its batch has to run again instead."""
        if not self.layout.exists(self.readable_again_path):
            return pl.DataFrame(schema=READABLE_AGAIN_SCHEMA)
        return self.layout.read_parquet(self.readable_again_path)

    def _record_readable_again(self, listing: list[Path]) -> None:
        offline = self.layout.read_failures().filter(pl.col("offline")).select("blob_name", "batch").unique()
        readable = pl.DataFrame(schema=READABLE_AGAIN_SCHEMA)
        if offline.height:
            batches = offline["batch"].unique().to_list()
            versions = self.layout.read_parquet_many([self.manifest_path(k) for k in batches], ["blob_name", "etag"],
                                                     file_stem_column="batch")
            listed_online = pl.scan_parquet(listing).filter(~pl.col("offline")).select("blob_name", "etag")
            # The same version listed: an overwritten blob is a new version with a batch of its own.
            readable = (offline.lazy().join(versions.lazy(), on=["blob_name", "batch"])
                        .join(listed_online, on=["blob_name", "etag"], how="semi")
                        .select(list(READABLE_AGAIN_SCHEMA)).sort("batch", "blob_name").collect())
        if not readable.equals(self.readable_again()):
            self.layout.write_parquet(readable, self.readable_again_path)

    @contextlib.contextmanager
    def _locked(self):
        # The sensor and `dedup run` may register at the same time. The lock is local:
        # registration happens on one machine (the daemon's), also with shared data.
        with exclusive_lock(self.layout.home / ".ledger.lock"):
            yield

    @property
    def source_path(self) -> str:
        return f"{self.directory}/source.json"

    def claim_source(self, identity: str) -> None:
        """Record the source this data root batches, or refuse another one: its listing would
        take every blob batched so far for deleted (their groups emptied, and a name both
        sources hold taken for one blob overwritten). The first source to register is kept."""
        with self._locked():
            if not self.layout.exists(self.source_path):
                self.layout.write_bytes(self.source_path, json.dumps({"source": identity}).encode())
                return
            recorded = json.loads(self.layout.read_bytes(self.source_path))["source"]
            if recorded != identity:
                raise SetupError(
                    f"{self.layout.uri(self.directory)} holds the batches of {recorded}, not of {identity}: give "
                    f"that source a DEDUP_HOME (or DEDUP_DATA_URL) of its own. If these are the same blobs at a "
                    f"new address, delete {self.layout.uri(self.source_path)} once to move the results to it.")

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
        with self._locked():
            listing_path = self.layout.home / f".listing-{uuid.uuid4().hex}.parquet"
            try:
                _stream_to_parquet(blobs, listing_path)
                return self._register_listed([listing_path], max_batch_size, settle_seconds, now)
            finally:
                listing_path.unlink(missing_ok=True)

    def register_listing(self, listing: ResumableListing, max_batch_size: int, settle_seconds: float = 0.0,
                         now: datetime | None = None) -> list[str]:
        """`register` from a listing completed over several calls, which it then clears."""
        with self._locked():
            keys = self._register_listed(listing.parts(), max_batch_size, settle_seconds, now)
        listing.clear()
        return keys

    def _register_listed(self, listing: list[Path], max_batch_size: int, settle_seconds: float,
                         now: datetime | None) -> list[str]:
        """Cut batches from a listing's Parquet files."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        now = now or datetime.now(timezone.utc)
        cutoff = now - timedelta(seconds=settle_seconds)
        self._record_deletions(listing, now)
        self._record_readable_again(listing)
        fresh = (
            pl.scan_parquet(listing)
            .select(list(MANIFEST_SCHEMA))
            .filter(pl.col("last_modified") <= cutoff)
            .join(self.known_versions().lazy(), on=["blob_name", "etag"], how="anti")
            .unique(subset=["blob_name", "etag"], keep="first")
            .sort("last_modified", "blob_name")
            .collect()
        )
        existing = self.batch_keys()
        next_sequence = batch_sequence(existing[-1]) + 1 if existing else 1
        keys = []
        for offset in range(0, fresh.height, max_batch_size):
            key = batch_key(next_sequence + len(keys))
            self.layout.write_parquet(fresh.slice(offset, max_batch_size), self.manifest_path(key))
            keys.append(key)
        return keys


class ResumableListing:
    """A source's listing continued over several calls, for the sensor: Dagster stops a
    sensor's evaluation after 60 s, and a container of millions of blobs takes minutes to
    list (~2,600 blobs/s against Azurite: 20 min at 3M). Each call lists pages for at most
    `seconds`, then stops at a page's end; the pages are kept as Parquet parts under
    `home/.listing/` with the token that resumes after them, so a restarted daemon goes
    on where it stopped. A listing of another source starts over."""

    def __init__(self, home: Path, source_id: str):
        self.directory = Path(home) / ".listing"
        self.source_id = source_id

    @property
    def _state_path(self) -> Path:
        return self.directory / "state.json"

    def _state(self) -> dict:
        try:
            state = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            state = None
        if not state or state.get("source") != self.source_id:
            return {"source": self.source_id, "resume": None, "parts": 0, "blobs": 0, "complete": False}
        return state

    def advance(self, source, seconds: float) -> bool:
        """List on for up to `seconds` (at least one page); True once the listing is complete."""
        state = self._state()
        if state["complete"]:
            return True
        if state["parts"] == 0:
            self.clear()
        deadline = time.monotonic() + seconds
        try:
            for blobs, resume in source.list_pages(state["resume"]):
                with replaced_atomically(self.directory / f"part-{state['parts']:06d}.parquet") as part:
                    _stream_to_parquet(blobs, part)
                state = {**state, "resume": resume, "parts": state["parts"] + 1,
                         "blobs": state["blobs"] + len(blobs), "complete": resume is None}
                write_bytes_atomic(json.dumps(state).encode(), self._state_path)
                if resume is None or time.monotonic() >= deadline:
                    break
        except SourceUnavailableError:
            raise  # the source is down: the listing goes on from here once it answers
        except Exception:
            self.clear()  # a token the source no longer takes (a container recreated): start over
            raise
        return state["complete"]

    @property
    def blobs_listed(self) -> int:
        return self._state()["blobs"]

    @property
    def complete(self) -> bool:
        return self._state()["complete"]

    def parts(self) -> list[Path]:
        return [self.directory / f"part-{number:06d}.parquet" for number in range(self._state()["parts"])]

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)



def _rows(blobs: Iterable[BlobInfo]) -> Iterator[tuple]:
    for blob in blobs:
        yield (blob.name, blob.size, blob.etag, blob.last_modified, blob.content_md5, blob.offline)


def _to_frame(blobs: Iterable[BlobInfo]) -> pl.DataFrame:
    return pl.DataFrame(list(_rows(blobs)), schema=LISTING_SCHEMA, orient="row").select(list(MANIFEST_SCHEMA))


def _stream_to_parquet(blobs: Iterable[BlobInfo], path) -> None:
    """A listing of any length to Parquet, LISTING_CHUNK rows at a time: millions of
    blobs never sit in memory as Python objects."""
    writer = None
    try:
        rows = _rows(blobs)
        while chunk := list(itertools.islice(rows, LISTING_CHUNK)):
            table = pl.DataFrame(chunk, schema=LISTING_SCHEMA, orient="row").to_arrow()
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer is None:
            pl.DataFrame(schema=LISTING_SCHEMA).write_parquet(path)
    finally:
        if writer is not None:
            writer.close()
