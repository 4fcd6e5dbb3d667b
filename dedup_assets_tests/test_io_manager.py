import dagster as dg
import polars as pl
import pytest

from dedup_assets.io_manager import ParquetIOManager
from dedup_assets.resources import DedupStorageResource


def contexts(asset="wavelet_hashes", partition="batch-000001"):
    key = dg.AssetKey(asset)
    output = dg.build_output_context(asset_key=key, partition_key=partition)
    input_ = dg.build_input_context(asset_key=key, partition_key=partition,
                                    upstream_output=output)
    return output, input_


def test_round_trips_a_partition_and_tags_rows_with_their_batch(home):
    manager = ParquetIOManager(storage=DedupStorageResource(home=str(home)))
    frame = pl.DataFrame({"blob_name": ["a.jpg", "b.jpg"], "wavelet_hash": [1, 2]},
                         schema_overrides={"wavelet_hash": pl.UInt64})
    output, input_ = contexts()
    manager.handle_output(output, frame)
    loaded = manager.load_input(input_)
    assert loaded.drop("batch").equals(frame)
    assert loaded["batch"].to_list() == ["batch-000001"] * 2
    assert (home / "parquet" / "wavelet_hashes" / "batch-000001.parquet").exists()


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_changed_partition(home):
    manager = ParquetIOManager(storage=DedupStorageResource(home=str(home)))
    output, input_ = contexts()
    manager.handle_output(output, pl.DataFrame({"blob_name": ["kept.jpg"]}))
    # A column Parquet cannot encode makes the real writer fail part-way.
    unwritable = pl.DataFrame({"blob_name": ["x"], "payload": [object()]}, schema={"blob_name": pl.String, "payload": pl.Object})
    with pytest.raises(Exception):
        manager.handle_output(contexts()[0], unwritable)
    folder = home / "parquet" / "wavelet_hashes"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".catalogued")) == ["batch-000001.parquet"]
    assert manager.load_input(input_)["blob_name"].to_list() == ["kept.jpg"]


def test_refuses_objects_that_are_not_dataframes(home):
    with pytest.raises(TypeError, match="polars DataFrames or Parquet files"):
        ParquetIOManager(storage=DedupStorageResource(home=str(home))).handle_output(contexts()[0], {"not": "a frame"})


def test_stores_a_parquet_file_an_unpartitioned_asset_already_wrote(home, tmp_path):
    manager = ParquetIOManager(storage=DedupStorageResource(home=str(home)))
    written = tmp_path / "manifest.parquet"
    frame = pl.DataFrame({"blob_name": ["a.jpg", "b.jpg"], "action": ["keep", "drop"]})
    frame.write_parquet(written)
    output, input_ = contexts("keep_drop_manifest", None)
    manager.handle_output(output, written)
    assert manager.load_input(input_).equals(frame)
    with pytest.raises(TypeError, match="batch column"):  # a partition's rows must name their batch
        manager.handle_output(contexts()[0], written)
