import time

import dagster as dg
import polars as pl

from dedup_assets.assets.reporting import markdown_preview, timing
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import DedupStorageResource


@dg.asset(
    partitions_def=batch_partitions,
    group_name="cascade",
    kinds={"polars", "parquet"},
    io_manager_key="parquet_io_manager",
)
def blob_inventory(context: dg.AssetExecutionContext, storage: DedupStorageResource) -> dg.Output[pl.DataFrame]:
    """The blobs of one ingestion batch: name, size, etag and last-modified time.

    The batch's membership was fixed in the ledger when the batch was cut (by the
    new-blobs sensor or `dedup run`), so re-materializing a batch never changes it.
    """
    started = time.perf_counter()
    inventory = storage.ledger.read_manifest(context.partition_key)
    return dg.Output(
        inventory,
        metadata={
            "dagster/row_count": inventory.height,
            "total_bytes": int(inventory["size"].sum() or 0),
            **timing(inventory.height, time.perf_counter() - started),
            "preview": markdown_preview(inventory),
        },
    )
