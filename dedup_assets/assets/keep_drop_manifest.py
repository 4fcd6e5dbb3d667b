import time

import dagster as dg
import polars as pl

from dedup_assets.assets.clusters import clusters
from dedup_assets.assets.reporting import markdown_preview
from dedup_assets.resources import DedupStorageResource
from dedup_assets.review import keep_drop_manifest as build_manifest
from dedup_assets.review import write_manifest


@dg.asset(
    deps=[clusters],
    group_name="review",
    kinds={"duckdb", "csv", "parquet"},
    io_manager_key="parquet_io_manager",
)
def keep_drop_manifest(context: dg.AssetExecutionContext, storage: DedupStorageResource) -> dg.Output[pl.DataFrame]:
    """Every inventoried blob with its decision: keep, drop (a copy of the kept image) or
    review (it failed a stage), and why. Written as CSV and Parquet under
    `$DEDUP_HOME/review/`; DuckDB view `keep_drop_manifest`."""
    started = time.perf_counter()
    manifest = build_manifest(storage.layout)
    csv_path, parquet_path = write_manifest(manifest, storage.layout.review_dir)
    counts = {action: int(n) for action, n in manifest.group_by("action").len().rows()}
    context.log.info(f"manifest: {counts} -> {csv_path}")
    return dg.Output(manifest, metadata={
        "dagster/row_count": manifest.height,
        "keep": counts.get("keep", 0),
        "drop": counts.get("drop", 0),
        "review": counts.get("review", 0),
        "csv": dg.MetadataValue.path(str(csv_path)),
        "parquet": dg.MetadataValue.path(str(parquet_path)),
        "ms_per_image": round(1000 * (time.perf_counter() - started) / max(manifest.height, 1), 3),
        "preview": markdown_preview(manifest.filter(pl.col("action") != "keep").select(
            "blob_name", "action", "reason"), 20),
    })
