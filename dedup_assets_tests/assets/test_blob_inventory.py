import os

import polars as pl

from dedup_assets.assets import blob_inventory


def test_inventory_lists_the_batch_with_sizes_and_etags(materialize_batch, layout, image_folder, batch):
    result = materialize_batch([blob_inventory])
    inventory = pl.read_parquet(layout.partition_path("blob_inventory", batch))
    assert sorted(inventory["blob_name"]) == sorted(os.listdir(image_folder))
    for row in inventory.iter_rows(named=True):
        assert row["size"] == (image_folder / row["blob_name"]).stat().st_size
        assert row["etag"] and row["last_modified"] is not None
    assert set(inventory["batch"]) == {batch}
    metadata = result.asset_materializations_for_node("blob_inventory")[0].metadata
    assert metadata["dagster/row_count"].value == len(os.listdir(image_folder))
