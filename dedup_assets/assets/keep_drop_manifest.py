import time
from pathlib import Path

import dagster as dg
import polars as pl

from dedup_assets.assets.clusters import clusters
from dedup_assets.assets.reporting import markdown_preview
from dedup_assets.resources import DedupStorageResource
from dedup_assets.review import write_manifest


@dg.asset(
    deps=[clusters],
    group_name="review",
    kinds={"duckdb", "csv", "parquet"},
    io_manager_key="parquet_io_manager",
)
def keep_drop_manifest(context: dg.AssetExecutionContext, storage: DedupStorageResource) -> dg.Output[Path]:
    """Every inventoried blob with its decision: keep, drop (a copy of the kept image) or
    review (it failed a stage), and why. Written as CSV and Parquet under
    `$DEDUP_HOME/review/`; DuckDB view `keep_drop_manifest`."""
    started = time.perf_counter()
    manifest = write_manifest(storage.layout)
    context.log.info(f"manifest: {manifest.counts} -> {manifest.csv}")
    # The manifest has a row per blob of the corpus: the preview reads 20 rows, not all.
    undecided_or_dropped = (pl.scan_parquet(manifest.parquet).filter(pl.col("action") != "keep")
                            .select("blob_name", "action", "reason").head(20).collect())
    return dg.Output(manifest.parquet, metadata={
        "dagster/row_count": manifest.rows,
        "keep": manifest.counts.get("keep", 0),
        "drop": manifest.counts.get("drop", 0),
        "review": manifest.counts.get("review", 0),
        "csv": dg.MetadataValue.path(str(manifest.csv)),
        "parquet": dg.MetadataValue.path(str(manifest.parquet)),
        "ms_per_image": round(1000 * (time.perf_counter() - started) / max(manifest.rows, 1), 3),
        "preview": markdown_preview(undecided_or_dropped, 20),
    })
