import dagster as dg
import polars as pl
from pydantic import Field

from dedup_assets.assets.reporting import log_progress
from dedup_assets.hash_stage import STAGE, hash_blobs
from dedup_assets.memory import release_freed_memory
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import DedupStorageResource, ImageSourceResource


class WaveletHashConfig(dg.Config):
    workers: int = Field(0, ge=0)  # decode processes; 0 means one per usable core (vision/cores.py)


@dg.asset(
    partitions_def=batch_partitions,
    group_name="cascade",
    kinds={"pywavelets", "parquet"},
    io_manager_key="parquet_io_manager",
)
def wavelet_hashes(
    context: dg.AssetExecutionContext,
    config: WaveletHashConfig,
    blob_inventory: pl.DataFrame,
    image_source: ImageSourceResource,
    storage: DedupStorageResource,
) -> dg.Output[pl.DataFrame]:
    """Decode each blob once at thumbnail size: wavelet hash, colour signature, quality facts.

    Keeps a thumbnail per distinct content so later stages never read the original again.
    Blobs that cannot be read or decoded go to `failed_blobs` with the reason.
    """
    result = hash_blobs(
        image_source.open(),
        blob_inventory,
        storage.layout,
        workers=config.workers,
        on_progress=log_progress(context.log, "hashed"),
    )
    failed = storage.layout.write_failures(STAGE, context.partition_key, result.failures)
    for failure in result.failures[:20]:
        context.log.warning(f"failed: {failure['blob_name']}: {failure['reason']}")
    hashes = result.hashes
    release_freed_memory()  # batch after batch in one process: keep RSS flat
    return dg.Output(
        hashes,
        metadata={
            "dagster/row_count": hashes.height,
            "failed_blobs": failed,
            "images_per_second": round(hashes.height / max(result.seconds, 1e-9), 1),
            "ms_per_image": round(1000 * result.seconds / max(blob_inventory.height, 1), 2),
            "seconds": round(result.seconds, 3),
            "distinct_contents": hashes["content_hash"].n_unique() if hashes.height else 0,
        },
    )
