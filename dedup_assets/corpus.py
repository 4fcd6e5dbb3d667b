"""Reads across every batch: the incremental stages search a new batch against all
stored images, straight from the Parquet partitions (no Dagster input per batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import duckdb
import numpy as np
import polars as pl

from dedup_assets.catalog import bounded_memory
from dedup_assets.storage import StorageLayout


def _partition_files(layout: StorageLayout, asset_name: str) -> list[str]:
    return layout.glob(f"{layout.asset_dir(asset_name)}/*.parquet")


# Stored partitions fetched together on a remote data root: ~20 MB of embeddings.
PARTITIONS_AT_ONCE = 8


def partitions(layout: StorageLayout, asset_name: str, columns: list[str],
               where: pl.Expr | None = None) -> Iterator[pl.DataFrame]:
    """Selected columns (and rows, `where` given) of each stored partition in turn:
    memory of a few partitions."""
    for _, frame in layout.iter_parquet(_partition_files(layout, asset_name), columns, PARTITIONS_AT_ONCE,
                                        where=where):
        yield frame


@dataclass(frozen=True)
class StoredVectors:
    """Stored embeddings, one partition's or a group's: blob names and float16 vectors,
    a NumPy matrix on the host, or a PyTorch tensor held on the device the search runs on."""

    names: pl.Series
    vectors: Any  # (n, d) float16: np.ndarray, or torch.Tensor on a device
    contents: np.ndarray | None = None  # a 64-bit hash of each row's content_hash, where stored

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, device: str | None = None) -> "StoredVectors":
        """A stored partition's (blob_name, embedding) rows, and their contents where a
        content_hash column is given (`without`); on `device` (a PyTorch device) if given."""
        contents = frame["content_hash"].hash().to_numpy() if "content_hash" in frame.columns else None
        vectors = embeddings_matrix(frame, dtype=np.float16)
        if device is not None:
            import torch

            vectors = torch.from_numpy(vectors).to(device)
        return cls(frame["blob_name"], vectors, contents)

    def without(self, seen: set[int]) -> "StoredVectors":
        """One row per content: these rows but those whose content is in `seen` (met in an
        earlier row), each kept content added to it. Byte-identical copies (a logo stored a
        thousand times) would otherwise fill every query's nearest neighbours."""
        if self.contents is None:
            return self
        keep = np.zeros(len(self.contents), bool)
        for row, content in enumerate(self.contents.tolist()):
            if content not in seen:
                seen.add(content)
                keep[row] = True
        if keep.all():  # filtered only then: no copy of every stored vector per search
            return self
        if isinstance(self.vectors, np.ndarray):
            vectors = self.vectors[keep]
        else:
            import torch

            vectors = self.vectors[torch.from_numpy(keep).to(self.vectors.device)]
        return StoredVectors(self.names.filter(pl.Series(keep)), vectors, self.contents[keep])

    def __len__(self) -> int:
        return len(self.names)

    @property
    def nbytes(self) -> int:
        contents = 0 if self.contents is None else self.contents.nbytes
        return self.names.estimated_size() + self.vectors.nbytes + contents

    @staticmethod
    def joined(parts: list["StoredVectors"]) -> "StoredVectors":
        """Consecutive parts as one (on the device of their vectors)."""
        # A batch whose every blob failed stores no embedding: its empty matrix has no width.
        parts = [part for part in parts if len(part)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0].vectors, np.ndarray):
            vectors = np.concatenate([part.vectors for part in parts])
        else:
            import torch

            vectors = torch.cat([part.vectors for part in parts])
        contents = (None if any(part.contents is None for part in parts)
                    else np.concatenate([part.contents for part in parts]))
        return StoredVectors(pl.concat([part.names for part in parts]), vectors, contents)


class ResidentEmbeddings:
    """Stored `embeddings` partitions held decoded in this process between batches
    (`StoredVectors`: float16, on the host, or in the GPU's memory where the search runs
    there): a process that runs batch after batch (`dedup run`, a long-lived worker)
    reads again only the partitions written or rewritten since its last search, not
    every stored one per batch (at 10,000 images per batch, 3M images read 450M stored
    vectors: 0.87 h on a GPU host, docs/performance.md §7), and on a GPU sends none of them
    to the device again. A partition is known by its file's version
    (`StorageLayout.versions`): a rewritten one is read again. Filled in partition order
    up to `budget_bytes`, then no more: the search scans every partition in order, and
    least-recently-used eviction would then evict each one before its next use. One
    asset directory and one device at a time (another's search empties it)."""

    def __init__(self) -> None:
        self.directory: str | None = None
        self.device: str | None = None  # where the held vectors are: None, the host's memory
        self.held: dict[str, tuple[str, StoredVectors]] = {}  # path: (version, vectors)
        self.last_reads = 0  # partitions the last search read from storage

    def forget(self) -> None:
        """Hold nothing (the search has moved to the compressed index: none of it is read again)."""
        self.directory, self.held = None, {}

    @property
    def held_bytes(self) -> int:
        return sum(stored.nbytes for _, stored in self.held.values())

    def partitions(self, layout: StorageLayout, budget_bytes: int, device: str | None = None
                   ) -> Iterator[StoredVectors]:
        """Every stored partition's names and vectors in partition order, from memory
        where held and current, else read (and held while the budget allows); the
        vectors on `device` (a PyTorch device) if given, else NumPy matrices."""
        directory = layout.asset_dir("embeddings")
        versions = layout.versions(directory)
        if (directory, device) != (self.directory, self.device):
            self.directory, self.device, self.held = directory, device, {}
        self.held = {path: held for path, held in self.held.items()
                     if versions.get(path) == held[0] and budget_bytes > 0}
        room = budget_bytes - self.held_bytes
        paths = sorted(versions)
        read = layout.iter_parquet([path for path in paths if path not in self.held],
                                   ["blob_name", "content_hash", "embedding"], PARTITIONS_AT_ONCE)
        self.last_reads = 0
        for path in paths:
            if path in self.held:
                yield self.held[path][1]
                continue
            _, frame = next(read)
            self.last_reads += 1
            stored = StoredVectors.from_frame(frame, device)
            if stored.nbytes <= room:
                self.held[path] = (versions[path], stored)
                room -= stored.nbytes
            yield stored


resident_embeddings = ResidentEmbeddings()  # one per process

Grouped = TypeVar("Grouped")


def _frames_joined(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames, rechunk=True)  # one chunk: polars' gather from several can panic


def grouped(parts: Iterable[Grouped], rows: int,
            join: Callable[[list[Grouped]], Grouped] = _frames_joined) -> Iterator[Grouped]:
    """Consecutive parts (frames, or `StoredVectors` with `StoredVectors.joined`) joined
    into groups of at least `rows` rows (the last may be smaller): per-group work done
    once per group instead of once per partition."""
    held: list[Grouped] = []
    have = 0
    for part in parts:
        held.append(part)
        have += len(part)
        if have >= rows:
            yield join(held)
            held, have = [], 0
    if held:
        yield join(held)


# Stored partitions one DuckDB query picks rows from: ~100 MB of embeddings scanned.
FILES_PER_PICK = 100
PICK_MEMORY_LIMIT = "256MB"


def picked_rows(layout: StorageLayout, asset_name: str, columns: list[str], names: Iterable[str],
                files_at_once: int = FILES_PER_PICK, key: str = "blob_name") -> Iterator[pl.DataFrame]:
    """Selected columns of the stored rows of these blobs (or of the rows whose `key`
    column holds one of `names`: every stored copy of some contents), a group of
    partitions at a time, in partition order (a blob stored by several batches: its
    latest row last)."""
    wanted = pl.DataFrame({key: list(names)}, schema={key: pl.String})
    files = _partition_files(layout, asset_name)
    if wanted.height == 0 or not files:
        return
    if not layout.is_local:
        # One partition at a time, the wanted rows picked while reading (the other rows'
        # embeddings are never decoded): 6,500 rows out of 1M stored, 2.7 s instead of 15 s.
        yield from partitions(layout, asset_name, columns,
                              where=pl.col(key).is_in(wanted[key].implode()))
        return
    # On disk, one DuckDB semi-join per group of files: 48,000 rows out of 1M stored
    # embeddings in 4.1 s, against 11.0 s partition by partition with polars.
    with bounded_memory(duckdb.connect(), layout, PICK_MEMORY_LIMIT, reads_remote=False) as con:
        con.register("wanted", wanted.to_arrow())
        for start in range(0, len(files), files_at_once):
            # Only the columns these files store: one added to the asset later is missing
            # from partitions written before (`read_rows` gives it as null).
            yield con.execute(f"""
                select columns(c -> list_contains($columns, c))
                from read_parquet($files, filename = true, file_row_number = true, union_by_name = true)
                semi join wanted using ("{key}")
                order by filename, file_row_number""",
                {"files": files[start:start + files_at_once], "columns": columns}).pl()


def read_rows(layout: StorageLayout, asset_name: str, columns: list[str], names: Iterable[str],
              key: str = "blob_name") -> pl.DataFrame:
    """Selected columns of the stored rows of these blobs only (or of the rows whose `key`
    holds one of `names`): empty, with those columns, if none are stored (a batch without
    candidate pairs joins and dedupes it by name). A column no partition read stores
    (added to the asset since) comes back null."""
    return _with_columns(_read_rows(layout, asset_name, columns, names, key), columns)


def _read_rows(layout: StorageLayout, asset_name: str, columns: list[str], names: Iterable[str],
               key: str = "blob_name") -> pl.DataFrame:
    picked = list(picked_rows(layout, asset_name, columns, names, key=key))
    if frames := [frame for frame in picked if frame.height]:
        return pl.concat(frames, how="diagonal_relaxed")
    if picked:
        return picked[0]  # none stored for these names: empty, with the stored types
    # No names asked for: the stored types from one partition (a batch without pairs).
    for _, stored in layout.iter_parquet(_partition_files(layout, asset_name)[:1], columns):
        return stored.clear()
    return pl.DataFrame(schema={column: pl.String if column == "blob_name" else pl.Null for column in columns})


def _with_columns(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    missing = [pl.lit(None).alias(column) for column in columns if column not in frame.columns]
    return frame.with_columns(missing).select(columns) if missing else frame.select(columns)


# DuckDB spills beyond it. 128 MB: over 25M stored pairs (500k duplicates) the query
# peaks at +340 MB (the result, its Arrow copy and Parquet's read buffers) without spilling.
DUPLICATE_SCAN_MEMORY_LIMIT = "128MB"


def latest_duplicate_pairs(layout: StorageLayout, columns: list[str]) -> pl.DataFrame:
    """The latest decision on every pair ever judged a duplicate: memory grows with the
    duplicates found, not with every pair ever verified (~25 per image). A later batch's
    `false` on a pair still overrides an earlier `true` (batches in their key order;
    within one, the last row).

    One DuckDB query over every stored partition, within a bounded buffer: 25M stored
    pairs in ~5 s (16-17 s with the stored rows materialised once, 29.9 s reading them
    one at a time with polars)."""
    files = layout.local_copies(layout.asset_dir("verified_pairs"))
    asked = list(dict.fromkeys(["blob_a", "blob_b", "is_duplicate", *columns]))
    if not files:
        return pl.DataFrame(schema={column: pl.Boolean if column == "is_duplicate" else pl.String for column in asked})
    with bounded_memory(duckdb.connect(), layout, DUPLICATE_SCAN_MEMORY_LIMIT, reads_remote=False) as con:
        # A column added to the asset later (content_a, content_b) is in no partition
        # written before: read as null.
        stored = {row[0] for row in con.execute(
            "describe select * from read_parquet($files, union_by_name = true)", {"files": files}).fetchall()}
        con.execute("set preserve_insertion_order = false")  # a set of pairs: no order to keep
        return _with_columns(con.execute(_latest_duplicates_sql([c for c in asked if c in stored]),
                                         {"files": files}).pl(), asked)


def with_current_contents(pairs: pl.DataFrame, layout: StorageLayout) -> pl.DataFrame:
    """Pairs (with content_a, content_b) whose contents were not stored with them (written
    before they were) given each end's content as its blob holds it now."""
    unknown = pairs.filter(pl.col("content_a").is_null() | pl.col("content_b").is_null())
    if unknown.height == 0:
        return pairs
    current = read_rows(layout, "wavelet_hashes", ["blob_name", "content_hash"],
                        set(unknown["blob_a"]) | set(unknown["blob_b"])).unique("blob_name", keep="last")
    for end in ("a", "b"):
        pairs = (pairs.join(current.rename({"blob_name": f"blob_{end}", "content_hash": "current"}),
                            on=f"blob_{end}", how="left", maintain_order="left")
                 .with_columns(pl.coalesce(pl.col(f"content_{end}").cast(pl.String), "current").alias(f"content_{end}"))
                 .drop("current"))
    return pairs


# `pairs` is read twice, streaming: materialised once (DuckDB's default for a CTE named
# twice) every stored pair went through the 128 MB buffer and spilled. Local files
# (copies, when the data root is remote): DuckDB reads them directly.
def _latest_duplicates_sql(columns: list[str]) -> str:
    wanted = ", ".join(f'"{column}"' for column in columns)
    return f"""
        with pairs as not materialized (
            select {wanted}, filename, file_row_number
            from read_parquet($files, filename = true, file_row_number = true, union_by_name = true)),
        ever as (select distinct blob_a, blob_b from pairs where is_duplicate),
        latest as (
            select {wanted} from pairs semi join ever using (blob_a, blob_b)
            qualify row_number() over (partition by blob_a, blob_b
                                       order by filename desc, file_row_number desc) = 1)
        select * from latest where is_duplicate"""


def embeddings_matrix(frame: pl.DataFrame | pl.Series, dim: int | None = None,
                      dtype: type = np.float32) -> np.ndarray:
    """The float16 `embedding` column (raw bytes per row; or that column itself) as a
    matrix of `dtype`: float32, or float16 to keep the stored values as they are (a GPU
    widens them after a transfer of half the bytes)."""
    column = frame if isinstance(frame, pl.Series) else frame["embedding"]
    if column.len() == 0:
        return np.zeros((0, dim or 0), dtype)
    sizes = column.bin.size()
    width = sizes[0]
    if column.null_count() or width is None or width % 2 or (sizes != width).any():
        raise ValueError(f"stored embeddings must all hold one float16 vector of the same size; found "
                         f"{column.null_count()} missing and sizes of {sizes.min()} to {sizes.max()} bytes")
    # Reinterpreted by polars: with a Python bytes object per row, joined, reading stored
    # embeddings was 1.3-1.4x slower (docs/performance.md, §7). A copy: writable, and
    # not holding the frame's buffers.
    return column.bin.reinterpret(dtype=pl.Array(pl.Float16, width // 2)).to_numpy().astype(dtype)
