"""Parquet-per-partition IO manager for polars DataFrames."""

from __future__ import annotations

import dagster as dg
import polars as pl

from dedup_assets.catalog import ensure_view
from dedup_assets.storage import StorageLayout, write_parquet_atomic


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores each partition of each asset as `$home/parquet/<asset>/<partition>.parquet`.

    Every stored frame carries a `batch` column naming its partition, so the DuckDB views
    (one per asset, over all partitions) can be filtered or joined by batch.
    """

    home: str

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(self.home)

    def _path(self, context: dg.OutputContext | dg.InputContext):
        asset_name = context.asset_key.path[-1]
        partition = context.partition_key if context.has_partition_key else None
        return asset_name, self.layout.partition_path(asset_name, partition)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        if obj is None:
            return
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"ParquetIOManager stores polars DataFrames, got {type(obj).__name__}")
        asset_name, path = self._path(context)
        if context.has_partition_key and "batch" not in obj.columns:
            obj = obj.with_columns(pl.lit(context.partition_key).alias("batch"))
        write_parquet_atomic(obj, path)
        ensure_view(self.layout, asset_name)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        asset_name = context.asset_key.path[-1]
        if context.has_asset_partitions and len(context.asset_partition_keys) != 1:
            frames = [
                pl.read_parquet(self.layout.partition_path(asset_name, key))
                for key in context.asset_partition_keys
                if self.layout.partition_path(asset_name, key).exists()
            ]
            return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        key = context.asset_partition_key if context.has_asset_partitions else None
        return pl.read_parquet(self.layout.partition_path(asset_name, key))
