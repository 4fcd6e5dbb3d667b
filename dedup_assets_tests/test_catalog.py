import multiprocessing

import duckdb
import polars as pl
import pytest

from dedup_assets.catalog import bounded_memory, ensure_view, register_views
from dedup_assets.storage import StorageLayout


def write_partition(home: str, asset: str, partition: str) -> None:
    layout = StorageLayout(home)
    layout.write_parquet(pl.DataFrame({"blob_name": [f"{partition}-{i}" for i in range(5)]}),
                         layout.partition_path(asset, partition))
    ensure_view(layout, asset)


def test_views_cover_every_partition_without_catalog_updates(layout):
    write_partition(str(layout.home), "wavelet_hashes", "batch-000001")
    write_partition(str(layout.home), "wavelet_hashes", "batch-000002")
    con = duckdb.connect(str(layout.catalog_path), read_only=True)
    assert con.execute("select count(*) from wavelet_hashes").fetchone()[0] == 10


def test_concurrent_writers_in_separate_processes_do_not_conflict(layout):
    jobs = [(str(layout.home), asset, f"batch-{n:06d}") for asset in ("a1", "a2", "a3", "a4") for n in range(3)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(write_partition, jobs)
        # Let the workers exit by themselves: leaving the block terminates them with
        # SIGTERM, which a process that ignores it (inherited by its children) never obeys.
        pool.close()
        pool.join()
    assert register_views(layout) == ["a1", "a2", "a3", "a4"]
    con = duckdb.connect(str(layout.catalog_path), read_only=True)
    for asset in ("a1", "a2", "a3", "a4"):
        assert con.execute(f"select count(*) from {asset}").fetchone()[0] == 15


def test_bounded_queries_spill_to_folders_of_their_own_removed_afterwards(layout):
    """Concurrent runs each spill to their own folder: DuckDB's spill files would clash."""
    def setting(con, name):
        return con.execute(f"select current_setting('{name}')").fetchone()[0]

    with bounded_memory(duckdb.connect(), layout, "64MB") as one, bounded_memory(duckdb.connect(), layout, "64MB") as two:
        folders = {setting(one, "temp_directory"), setting(two, "temp_directory")}
        assert len(folders) == 2
        assert setting(one, "memory_limit") == "61.0 MiB"  # 64 MB, in DuckDB's units
        # A sort of ~150 MB, over the limit, spills there and completes (no out-of-memory).
        sort = "select count(*) from (select md5(i::varchar) h, i from range(2000000) t(i) order by h)"
        assert one.execute(sort).fetchone() == (2_000_000,)
    assert list((layout.home / ".duckdb_spill").iterdir()) == []
    with pytest.raises(duckdb.ConnectionException):
        one.execute("select 1")
