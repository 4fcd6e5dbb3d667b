"""The DuckDB catalog: `$DEDUP_HOME/dedup.duckdb` holds one view per asset, for people;
the pipeline reads through the same views built in memory (`connect_views`).

Views read the asset's Parquet files through a glob (a local path, or `az://...` when the
data root is on Azure: `connect()` then registers the fsspec filesystem), so a new partition is visible
without touching the catalog; the catalog is written only when an asset gets its first
file. Those writes are serialised with a file lock, because DuckDB allows a single
writing process per database file (concurrent runs would otherwise fail with
`Could not set lock on file`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import duckdb

from dedup_assets.local_files import exclusive_lock
from dedup_assets.storage import FAILED_BLOBS, StorageLayout

log = logging.getLogger(__name__)

LATEST_ROW_PER_BLOB = {"clusters"}


@contextlib.contextmanager
def _catalog_lock(layout: StorageLayout):
    with exclusive_lock(layout.home / ".dedup.duckdb.lock"):
        yield


def _view_sql(layout: StorageLayout, asset_name: str) -> str | None:
    pattern = f"{layout.asset_dir(asset_name)}/{'*/*.parquet' if asset_name == FAILED_BLOBS else '*.parquet'}"
    if not layout.glob(pattern):
        return None  # DuckDB refuses a view over a glob that matches nothing.
    glob = layout.uri(pattern).replace("'", "''")
    if asset_name in LATEST_ROW_PER_BLOB:
        # Groups span batches: a later run rewrites rows of blobs from earlier batches.
        # Blobs deleted from the source since their row was computed are left out.
        tombstones = layout.uri(f"{layout.batches_dir}/tombstones.parquet").replace("'", "''")
        return (
            f'create or replace view "{asset_name}" as '
            f"with latest as (select * from read_parquet('{glob}', union_by_name = true) "
            "qualify row_number() over (partition by blob_name order by computed_at desc, batch desc) = 1) "
            f"select * from latest where not exists (select 1 from read_parquet('{tombstones}') t "
            "where t.blob_name = latest.blob_name and t.deleted_at > latest.computed_at)"
        )
    return (
        f'create or replace view "{asset_name}" as '
        f"select * from read_parquet('{glob}', union_by_name = true)"
    )


def connect(layout: StorageLayout, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to the catalog file that can read the data root wherever it is."""
    con = duckdb.connect(str(layout.catalog_path), read_only=read_only)
    layout.register(con)
    return con


def connect_views(layout: StorageLayout) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views, for the pipeline's own reads. The
    catalog file is for people: DuckDB lets no process read a file another holds open for
    writing, and a `duckdb data/dedup.duckdb` shell left open (read-write by default), or a
    `dedup run` refreshing the views, failed every review step meanwhile."""
    con = duckdb.connect()
    layout.register(con)
    for name in layout.subdirectories(layout.parquet_root):
        sql = _view_sql(layout, name)
        if sql:
            con.execute(sql)
    return con


REMOTE_SCAN_THREADS = 16


@contextlib.contextmanager
def bounded_memory(con: duckdb.DuckDBPyConnection, layout: StorageLayout, memory_limit: str,
                   reads_remote: bool | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """`con`, set for a query over the whole corpus that must not grow with it: DuckDB
    spills what exceeds `memory_limit` to a folder of this connection's own under
    `$DEDUP_HOME/.duckdb_spill` (concurrent runs must not share spill files), and draws
    no progress bar (it would land on the step's stdout). Closed, and its spill folder
    removed, at the end of the block. reads_remote (default: the data root is remote):
    the query reads files through fsspec."""
    if reads_remote is None:
        reads_remote = not layout.is_local
    root = layout.home / ".duckdb_spill"
    root.mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    try:
        con.execute("set enable_progress_bar = false")
        con.execute(f"set memory_limit = '{memory_limit}'")
        con.execute(f"set temp_directory = '{quoted(str(spill))}'")
        if reads_remote:
            # Through fsspec each Parquet file costs ~17 small requests, each waited on by
            # one of DuckDB's threads: more threads wait together (bench/azure_io.py).
            con.execute(f"set threads = {REMOTE_SCAN_THREADS}")
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def quoted(text: str) -> str:
    """Text inside a single-quoted SQL literal."""
    return text.replace("'", "''")


def _connect_with_retry(layout: StorageLayout, attempts: int = 20) -> duckdb.DuckDBPyConnection:
    # Another process (a user's `duckdb` shell, say) may hold the file open for a moment.
    for attempt in range(attempts):
        try:
            return connect(layout, read_only=False)
        except duckdb.IOException:
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def register_views(layout: StorageLayout, asset_names: list[str] | None = None) -> list[str]:
    """Create (or refresh) views for the given assets, or for every asset on disk."""
    if asset_names is None:
        asset_names = layout.subdirectories(layout.parquet_root)
    statements = {name: _view_sql(layout, name) for name in asset_names}
    statements = {name: sql for name, sql in statements.items() if sql}
    if not statements:
        return []
    with _catalog_lock(layout):
        con = _connect_with_retry(layout)
        try:
            for sql in statements.values():
                con.execute(sql)
        finally:
            con.close()
    return sorted(statements)


def ensure_view(layout: StorageLayout, asset_name: str) -> None:
    """Register the asset's view once; a marker file beside the catalog avoids reopening
    it per write (the catalog is per machine, the data may be shared)."""
    marker = layout.home / ".catalogued" / asset_name
    if marker.exists() and layout.catalog_path.exists():
        return
    try:
        if register_views(layout, [asset_name]):
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    except duckdb.Error as error:  # the Parquet data is safe; the view can be rebuilt later
        log.warning("could not update the DuckDB catalog for %s: %s", asset_name, error)


def query(layout: StorageLayout, sql: str) -> list[tuple]:
    con = connect_views(layout)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
