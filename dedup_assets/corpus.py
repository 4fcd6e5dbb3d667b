"""Reads across every batch: the incremental stages search a new batch against all
stored images, straight from the Parquet partitions (no Dagster input per batch)."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import polars as pl

from dedup_assets.storage import StorageLayout


def _partition_files(layout: StorageLayout, asset_name: str) -> list[str]:
    return layout.glob(f"{layout.asset_dir(asset_name)}/*.parquet")


def partitions(layout: StorageLayout, asset_name: str, columns: list[str]) -> Iterator[pl.DataFrame]:
    """Selected columns of each stored partition in turn: memory of one partition."""
    for path in _partition_files(layout, asset_name):
        yield layout.read_parquet(path, columns)


def read_rows(layout: StorageLayout, asset_name: str, columns: list[str], names: Iterable[str]) -> pl.DataFrame:
    """Selected columns of the stored rows of these blobs only (empty if none yet)."""
    wanted = pl.Series(list(names), dtype=pl.String)
    # One partition at a time, keeping only the wanted rows: memory of one partition.
    frames = [frame.filter(pl.col("blob_name").is_in(wanted))
              for frame in partitions(layout, asset_name, columns)]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def latest_duplicate_pairs(layout: StorageLayout, columns: list[str]) -> pl.DataFrame:
    """The latest decision on every pair ever judged a duplicate, batch by batch: memory
    grows with the duplicates found, not with every pair ever verified (~25 per image).
    A later batch's `false` on a pair still overrides an earlier `true`."""
    keys = ["blob_a", "blob_b"]
    wanted = list(dict.fromkeys([*keys, "is_duplicate", *columns]))
    held: pl.DataFrame | None = None
    for part in partitions(layout, "verified_pairs", wanted):  # in batch order
        duplicates = part.filter(pl.col("is_duplicate"))
        if held is None:
            held = duplicates
            continue
        # Worth holding: this batch's duplicates, and any new decision on a held pair.
        revisions = part.join(held.select(keys), on=keys, how="semi")
        fresh = pl.concat([duplicates, revisions]).unique(subset=keys, keep="last")
        held = pl.concat([held.join(fresh.select(keys), on=keys, how="anti"), fresh])
    return pl.DataFrame() if held is None else held.filter(pl.col("is_duplicate"))


def embeddings_matrix(frame: pl.DataFrame, dim: int | None = None) -> np.ndarray:
    """The float16 `embedding` column (raw bytes per row) as a float32 matrix."""
    if frame.height == 0:
        return np.zeros((0, dim or 0), np.float32)
    raw = b"".join(frame["embedding"].to_list())
    return np.frombuffer(raw, dtype="<f2").reshape(frame.height, -1).astype(np.float32)
