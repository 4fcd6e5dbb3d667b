import time

import dagster as dg
import polars as pl

from dedup_assets.assets.reporting import markdown_preview, timing
from dedup_assets.plots import cluster_size_histogram, markdown_image
from dedup_assets.cluster_stage import cluster_batch, touched_nodes, touching_pairs
from dedup_assets.corpus import latest_duplicate_pairs, read_rows, with_current_contents
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import DedupStorageResource

IMAGE_COLUMNS = ["blob_name", "content_hash", "width", "height", "picture_width", "picture_height", "format",
                 "jpeg_quality", "sharpness", "bytes", "color_signature"]


@dg.asset(
    partitions_def=batch_partitions,
    group_name="cascade",
    kinds={"polars", "duckdb"},
    io_manager_key="parquet_io_manager",
)
def clusters(
    context: dg.AssetExecutionContext,
    verified_pairs: pl.DataFrame,
    wavelet_hashes: pl.DataFrame,
    storage: DedupStorageResource,
) -> dg.Output[pl.DataFrame]:
    """Duplicate groups touching this batch (star clustering: no transitive chaining) and
    the best copy of each: the whole frame, then resolution (of the picture inside any
    bars or frame), compression (between copies that agree on colour), age, resemblance to the other
    copies, colour, sharpness, and last the finest setting, the most pixels, the smallest file.

    Groups can span batches, so each run writes every member of the groups it touched;
    the DuckDB view `clusters` keeps the latest row per blob (singletons included).
    """
    started = time.perf_counter()
    layout = storage.layout
    # Only what the groups touching this batch need: duplicate pairs (not every pair
    # ever verified) and the images of those groups (not the whole corpus).
    # Byte-identical copies are one node of the graph, their content: found by content.
    batch_names = wavelet_hashes["blob_name"].to_list()
    batch_contents = wavelet_hashes["content_hash"].unique().to_list()
    stored = latest_duplicate_pairs(layout, ["coverage_a", "coverage_b", "frame_a", "frame_b", "cosine",
                                            "content_a", "content_b"])
    pairs = touching_pairs(batch_contents, with_current_contents(stored, layout))
    contents = touched_nodes(batch_contents, pairs)
    # Every copy of those contents (the latest row of each: a blob rewritten since may hold another).
    touched = set(batch_names) | set(read_rows(layout, "wavelet_hashes", ["blob_name"], contents,
                                               key="content_hash")["blob_name"])
    images = read_rows(layout, "wavelet_hashes", IMAGE_COLUMNS, touched).join(
        read_rows(layout, "blob_inventory", ["blob_name", "last_modified"], touched).unique("blob_name", keep="last"),
        on="blob_name", how="left",
    ).unique("blob_name", keep="last")
    result = cluster_batch(batch_names, pairs, images)
    groups = result.filter(pl.col("cluster_size") > 1)
    return dg.Output(result, metadata={
        "dagster/row_count": result.height,
        "duplicate_groups": groups["cluster_id"].n_unique() if groups.height else 0,
        "duplicates_to_drop": int((~groups["is_representative"]).sum()) if groups.height else 0,
        **timing(wavelet_hashes.height, time.perf_counter() - started),
        "cluster_sizes": dg.MetadataValue.md(markdown_image(cluster_size_histogram(
            groups.unique("cluster_id")["cluster_size"].to_numpy()), "duplicate group sizes")),
        "preview": markdown_preview(groups.select("cluster_id", "blob_name", "is_representative", "quality_score", "reason"), 20),
    })
