import time

import dagster as dg
import numpy as np
import polars as pl

from dedup_assets.assets.reporting import markdown_preview, timing
from dedup_assets.corpus import read_all
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import DedupStorageResource
from dedup_assets.vision.color import color_distance
from dedup_assets.vision.search import hamming_pairs


class ColorCandidatesConfig(dg.Config):
    hamming_radius: int = 10  # bits of 64
    max_color_distance: float = 12.0  # mean |ΔLab| per grid cell


PAIR_SCHEMA = {"blob_a": pl.String, "blob_b": pl.String, "hamming": pl.Int32, "color_distance": pl.Float32}


def candidate_pairs(batch: pl.DataFrame, corpus: pl.DataFrame, radius: int, max_color: float) -> pl.DataFrame:
    """Near-hash pairs between a batch and the whole corpus (itself included), whose
    colour signatures agree. Each unordered pair once, as blob_a < blob_b."""
    found = hamming_pairs(batch["wavelet_hash"].to_numpy(), corpus["wavelet_hash"].to_numpy(), radius)
    names_a = batch["blob_name"].to_numpy()[found.query]
    names_b = corpus["blob_name"].to_numpy()[found.reference]
    signatures_a = np.stack(batch["color_signature"].to_numpy())[found.query] if batch.height else np.zeros((0, 48))
    signatures_b = np.stack(corpus["color_signature"].to_numpy())[found.reference] if corpus.height else np.zeros((0, 48))
    pairs = pl.DataFrame({
        "name_1": names_a, "name_2": names_b, "hamming": found.score,
        "color_distance": color_distance(signatures_a, signatures_b).astype(np.float32),
    })
    return (
        pairs.filter((pl.col("name_1") != pl.col("name_2")) & (pl.col("color_distance") <= max_color))
        .select(
            pl.min_horizontal("name_1", "name_2").alias("blob_a"),
            pl.max_horizontal("name_1", "name_2").alias("blob_b"),
            "hamming", "color_distance",
        )
        .unique(subset=["blob_a", "blob_b"], keep="first")
        .sort("blob_a", "blob_b")
        .cast(PAIR_SCHEMA)
    )


@dg.asset(
    partitions_def=batch_partitions,
    group_name="cascade",
    kinds={"faiss", "parquet"},
    io_manager_key="parquet_io_manager",
)
def color_candidates(
    context: dg.AssetExecutionContext,
    config: ColorCandidatesConfig,
    wavelet_hashes: pl.DataFrame,
    storage: DedupStorageResource,
) -> dg.Output[pl.DataFrame]:
    """Pairs whose wavelet hashes lie within a Hamming radius (faiss binary index), kept
    when their colour signatures agree. The batch is searched against itself and every
    other stored batch, so a later batch finds its duplicates among earlier ones."""
    started = time.perf_counter()
    corpus = read_all(storage.layout, "wavelet_hashes", ["blob_name", "wavelet_hash", "color_signature"])
    pairs = candidate_pairs(wavelet_hashes, corpus, config.hamming_radius, config.max_color_distance)
    context.log.info(f"{pairs.height} colour-agreeing near-hash pairs against {corpus.height} stored images")
    return dg.Output(pairs, metadata={
        "dagster/row_count": pairs.height,
        "corpus_images": corpus.height,
        **timing(wavelet_hashes.height, time.perf_counter() - started),
        "preview": markdown_preview(pairs),
    })
