"""Parquet-per-partition IO manager for polars DataFrames."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from dedup_assets.catalog import ensure_view
from dedup_assets.resources import DedupStorageResource
from dedup_assets.storage import StorageLayout


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores each partition of each asset as `<data root>/parquet/<asset>/<partition>.parquet`
    (a polars DataFrame, or a Parquet file an unpartitioned asset already wrote),
    on local disk or Azure Blob Storage (the `storage` resource decides).

    Every stored frame carries a `batch` column naming its partition, so the DuckDB views
    (one per asset, over all partitions) can be filtered or joined by batch.
    """

    storage: DedupStorageResource

    @property
    def layout(self) -> StorageLayout:
        return self.storage.layout

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        if obj is None:
            return
        layout = self.layout
        asset_name = context.asset_key.path[-1]
        path = layout.partition_path(asset_name, context.partition_key if context.has_partition_key else None)
        if isinstance(obj, Path):  # a Parquet file already written (a large output, streamed by DuckDB)
            if context.has_partition_key:
                raise TypeError("a partitioned asset's output must be a polars DataFrame (it gets a batch column)")
            layout.put_file(obj, path)
        elif isinstance(obj, pl.DataFrame):
            if context.has_partition_key and "batch" not in obj.columns:
                obj = obj.with_columns(pl.lit(context.partition_key).alias("batch"))
            layout.write_parquet(obj, path)
        else:
            raise TypeError(f"ParquetIOManager stores polars DataFrames or Parquet files, got {type(obj).__name__}")
        ensure_view(layout, asset_name)
        context.add_output_metadata({"path": dg.MetadataValue.path(layout.uri(path))})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        layout = self.layout
        asset_name = context.asset_key.path[-1]
        if context.has_asset_partitions and len(context.asset_partition_keys) != 1:
            paths = [layout.partition_path(asset_name, key) for key in context.asset_partition_keys]
            return layout.read_parquet_many([path for path in paths if layout.exists(path)])
        key = context.asset_partition_key if context.has_asset_partitions else None
        return layout.read_parquet(layout.partition_path(asset_name, key))


def storage_resources(storage: DedupStorageResource) -> dict:
    """The storage resource and the IO manager over the same storage, as Definitions take them."""
    return {"storage": storage, "parquet_io_manager": ParquetIOManager(storage=storage)}
