"""The storage layout behaves the same on local disk and on Azure Blob Storage (Azurite):
what is written is read back, listed and queried through the DuckDB catalog."""

from pathlib import Path

import polars as pl
import pytest

from dedup_assets.catalog import query, register_views
from dedup_assets.storage import StorageLayout, data_storage_options
from dedup_assets_tests.azurite import KEY


@pytest.fixture(params=["local", "azure"])
def any_layout(request, tmp_path):
    if request.param == "local":
        return StorageLayout(tmp_path / "home")
    azurite = request.getfixturevalue("azurite")
    container = request.getfixturevalue("container")
    options = data_storage_options(connection_string=azurite.connection_string)
    return StorageLayout(tmp_path / "home", f"az://{container.container_name}/shared data", options)


def test_partitions_written_are_listed_read_and_queried(any_layout):
    layout = any_layout
    for n in (2, 1):
        frame = pl.DataFrame({"blob_name": [f"b{n}-{i}" for i in range(3)], "score": [n] * 3})
        layout.write_parquet(frame, layout.partition_path("scores", f"batch-{n:06d}"))
    layout.write_failures("wavelet_hashes", "batch-000001", [{"blob_name": "x", "stage": "s", "reason": "r"}])

    paths = layout.glob(f"{layout.asset_dir('scores')}/*.parquet")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["batch-000001.parquet", "batch-000002.parquet"]
    assert layout.subdirectories(layout.parquet_root) == ["failed_blobs", "scores"]
    assert layout.exists(paths[0]) and not layout.exists(layout.partition_path("scores", "batch-000009"))
    both = layout.read_parquet_many(paths, ["score"], file_stem_column="batch")
    assert both.sort("batch").rows() == [(1, "batch-000001")] * 3 + [(2, "batch-000002")] * 3
    assert layout.read_parquet_many([]).height == 0
    # In groups smaller than the list, every file once, in order.
    assert [(path, frame["score"][0]) for path, frame in layout.iter_parquet(paths * 3, ["score"], at_once=3)] \
        == list(zip(paths * 3, [1, 2] * 3))
    # Rows picked while reading, by a column that need not be selected.
    picked = layout.iter_parquet(paths, ["score"], where=pl.col("blob_name").is_in(["b2-0", "b1-2", "b2-2"]))
    assert [frame.to_dicts() for _, frame in picked] == [[{"score": 1}], [{"score": 2}] * 2]

    assert register_views(layout) == ["failed_blobs", "scores"]
    assert query(layout, "select sum(score), count(*) from scores") == [(9, 6)]
    assert query(layout, "select reason from failed_blobs") == [("r",)]
    # Rewriting a partition replaces it; the view needs no update.
    layout.write_parquet(pl.DataFrame({"blob_name": ["only"], "score": [5]}), paths[1])
    assert query(layout, "select sum(score), count(*) from scores") == [(8, 4)]


def test_thumbnails_are_fetched_together_and_a_missing_one_is_named(any_layout):
    layout = any_layout
    keys = [layout.thumbnail_key(f"{n:064x}") for n in range(3)]
    for n, key in enumerate(keys):
        layout.write_bytes(layout.data_path(key), bytes([n]) * 10)
    assert layout.read_thumbnails(keys + keys[:1]) == {key: bytes([n]) * 10 for n, key in enumerate(keys)}
    missing = layout.thumbnail_key("f" * 64)
    with pytest.raises(FileNotFoundError, match="thumbnail missing"):
        layout.read_thumbnails([keys[0], missing])


def test_files_written_together_are_read_back_and_missing_ones_left_out(any_layout):
    layout = any_layout
    files = {f"verify_features/orb/{n % 7}/{n}.npz": n.to_bytes(2, "big") * (150 + n) for n in range(300)}
    layout.write_many_bytes(files)  # more than one concurrent round on Azure
    wanted = [*files, "verify_features/orb/none.npz"]
    assert layout.read_existing(wanted) == files
    assert layout.read_existing(["verify_features/elsewhere.npz"]) == {}


def test_credentials_stay_out_of_what_the_layout_shows(azurite, container, tmp_path):
    layout = StorageLayout(tmp_path, f"az://{container.container_name}/p",
                           data_storage_options(connection_string=azurite.connection_string))
    shown = [repr(layout), layout.uri(layout.parquet_root), layout.data_url, str(layout.partition_path("a", "b"))]
    assert not [text for text in shown if KEY[:16] in text or "AccountKey" in text]
    assert layout.uri(layout.parquet_root) == f"az://{container.container_name}/p/parquet"


def test_local_copies_follow_the_files_and_fetch_only_what_changed(any_layout):
    layout = any_layout
    folder = layout.asset_dir("pairs")
    assert layout.local_copies(folder) == []
    for n in (1, 2):
        layout.write_parquet(pl.DataFrame({"n": [n]}), layout.partition_path("pairs", f"batch-{n:06d}"))
    first = layout.local_copies(folder)
    assert [pl.read_parquet(path)["n"][0] for path in first] == [1, 2]
    written = [Path(path).stat().st_mtime_ns for path in first]
    assert layout.local_copies(folder) == first
    layout.write_parquet(pl.DataFrame({"n": [3]}), layout.partition_path("pairs", "batch-000002"))
    second = layout.local_copies(folder)
    assert [pl.read_parquet(path)["n"][0] for path in second] == [1, 3]
    assert Path(second[0]).stat().st_mtime_ns == written[0]  # unchanged: not fetched again
    if not layout.is_local:
        assert all(Path(path).is_relative_to(layout.home / ".data_cache") for path in second)
        assert second[1] != first[1] and not Path(first[1]).exists()  # the earlier version removed


def test_a_rewritten_file_gets_a_new_version_and_removed_files_are_gone(any_layout):
    layout = any_layout
    paths = [layout.partition_path("scores", key) for key in ("batch-000001", "batch-000002")]
    for n, path in enumerate(paths):
        layout.write_parquet(pl.DataFrame({"score": [n]}), path)
    before = layout.versions(layout.asset_dir("scores"))
    assert sorted(before) == paths and layout.versions(layout.asset_dir("scores")) == before
    layout.write_parquet(pl.DataFrame({"score": [7, 8]}), paths[1])
    after = layout.versions(layout.asset_dir("scores"))
    assert after[paths[0]] == before[paths[0]] and after[paths[1]] != before[paths[1]]
    layout.remove([paths[0]])
    assert sorted(layout.versions(layout.asset_dir("scores"))) == [paths[1]]
    assert layout.versions(layout.asset_dir("nothing")) == {}


def test_a_missing_file_does_not_keep_the_other_reads_alive(tmp_path):
    # A miss is kept in place of its result; it must not hold the results (every file
    # read with it) in a reference cycle until Python's next full collection: a batch's
    # cache misses held ~50 MB of features so.
    import gc
    import weakref

    class Read:  # stands for a file's bytes, which cannot be weakly referenced
        pass

    def read(name: str) -> Read:
        if name == "missing":
            raise FileNotFoundError(name)
        return Read()

    gc.disable()
    try:
        results = StorageLayout(tmp_path)._each(read, [("a",), ("missing",), ("b",)])
        assert isinstance(results[1], FileNotFoundError) and "missing" in str(results[1])
        alive = [weakref.ref(results[0]), weakref.ref(results[2])]
        del results
        assert [ref() for ref in alive] == [None, None]
    finally:
        gc.enable()


def test_failures_written_before_the_offline_column_read_as_not_offline(any_layout):
    layout = any_layout
    assert layout.read_failures().height == 0
    before = pl.DataFrame({"blob_name": ["old.jpg"], "stage": ["wavelet_hashes"], "reason": ["x"],
                           "batch": ["batch-000001"]})
    layout.write_parquet(before, layout.failures_path("wavelet_hashes", "batch-000001"))
    layout.write_failures("wavelet_hashes", "batch-000002", [
        {"blob_name": "cold.jpg", "stage": "wavelet_hashes", "reason": "offline", "offline": True}])
    failures = layout.read_failures().sort("batch")
    assert failures.select("blob_name", "offline").rows() == [("old.jpg", None), ("cold.jpg", True)]
