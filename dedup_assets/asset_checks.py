"""Asset checks, visible in the UI next to the assets they guard. Each reads the
partition's Parquet files directly, so a check never loads other partitions."""

import warnings

import dagster as dg
import polars as pl

from dedup_assets.assets import clusters, embeddings, wavelet_hashes
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import DedupStorageResource


def _read(storage: DedupStorageResource, asset: str, partition: str) -> pl.DataFrame:
    layout = storage.layout
    return layout.read_parquet(layout.partition_path(asset, partition))


# Partitioned checks are a Dagster preview feature, used knowingly: each check reads its
# own batch. Its warning would otherwise open every `dedup` command's output.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)


@dg.asset_check(asset=wavelet_hashes, partitions_def=batch_partitions, blocking=True)
def every_blob_accounted_for(context: dg.AssetCheckExecutionContext, storage: DedupStorageResource):
    """Every inventoried blob is either hashed or in failed_blobs with a reason, never both."""
    key = context.partition_key
    inventory = set(_read(storage, "blob_inventory", key)["blob_name"])
    hashed = set(_read(storage, "wavelet_hashes", key)["blob_name"])
    failures = storage.layout.read_parquet(storage.layout.failures_path("wavelet_hashes", key))
    failed = set(failures["blob_name"])
    missing, both = inventory - hashed - failed, hashed & failed
    unreasoned = failures.filter(pl.col("reason").is_null() | (pl.col("reason") == "")).height
    return dg.AssetCheckResult(
        passed=not missing and not both and not unreasoned and (hashed | failed) <= inventory,
        metadata={"inventoried": len(inventory), "hashed": len(hashed), "failed": len(failed),
                  "unaccounted": len(missing), "in_both": len(both), "failures_without_reason": unreasoned},
    )


@dg.asset_check(asset=embeddings, partitions_def=batch_partitions)
def one_embedding_per_decoded_blob(context: dg.AssetCheckExecutionContext, storage: DedupStorageResource):
    key = context.partition_key
    decoded = _read(storage, "wavelet_hashes", key)["blob_name"]
    embedded = _read(storage, "embeddings", key)["blob_name"]
    return dg.AssetCheckResult(
        passed=sorted(decoded) == sorted(embedded) and embedded.n_unique() == embedded.len(),
        metadata={"decoded": decoded.len(), "embedded": embedded.len()},
    )


@dg.asset_check(asset=clusters, partitions_def=batch_partitions)
def one_representative_per_cluster(context: dg.AssetCheckExecutionContext, storage: DedupStorageResource):
    """Each cluster written for this batch keeps exactly one copy, which is a member, and
    every decoded blob of the batch is in a cluster."""
    key = context.partition_key
    rows = _read(storage, "clusters", key)
    per_cluster = rows.group_by("cluster_id").agg(
        pl.col("is_representative").sum().alias("kept"),
        (pl.col("representative") == pl.col("blob_name")).sum().alias("representative_is_member"),
    )
    bad = per_cluster.filter((pl.col("kept") != 1) | (pl.col("representative_is_member") != 1)).height
    decoded = set(_read(storage, "wavelet_hashes", key)["blob_name"])
    unclustered = len(decoded - set(rows["blob_name"]))
    return dg.AssetCheckResult(
        passed=bad == 0 and unclustered == 0 and rows["blob_name"].n_unique() == rows.height,
        metadata={"clusters": per_cluster.height, "clusters_violating": bad, "unclustered_blobs": unclustered},
    )


pipeline_checks = [every_blob_accounted_for, one_embedding_per_decoded_blob, one_representative_per_cluster]
