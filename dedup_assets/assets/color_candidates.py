import time
from typing import Iterable

import dagster as dg
import numpy as np
import polars as pl

from dedup_assets.assets.reporting import markdown_preview, timing
from dedup_assets.corpus import grouped, partitions
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import DedupStorageResource
from dedup_assets.vision.color import SIGNATURE_SIZE, color_distance
from dedup_assets.vision.search import hamming_pairs


class ColorCandidatesConfig(dg.Config):
    hamming_radius: int = 10  # bits of 64
    max_color_distance: float = 12.0  # mean |ΔLab| per grid cell


STORED_ROWS_PER_SEARCH = 100_000  # ~10 MB of names, hashes and colour signatures

PAIR_SCHEMA = {"blob_a": pl.String, "blob_b": pl.String, "hamming": pl.Int32, "color_distance": pl.Float32}


def _signatures(column: pl.Series) -> np.ndarray:
    return np.stack(column.to_numpy()) if len(column) else np.zeros((0, SIGNATURE_SIZE), np.uint8)


def candidate_pairs(batch: pl.DataFrame, corpus: pl.DataFrame, radius: int, max_color: float) -> pl.DataFrame:
    """Near-hash pairs between a batch and the whole corpus (itself included), whose
    colour signatures agree. Each unordered pair once, as blob_a < blob_b.

    With content hashes given, one copy of each content takes part on either side and
    byte-identical copies never pair: they are one image (`clusters` groups them by
    content), and a picture stored N times would otherwise give N(N-1)/2 pairs."""
    by_content = "content_hash" in batch.columns and "content_hash" in corpus.columns
    if by_content:
        batch, corpus = (frame.unique(subset="content_hash", keep="first", maintain_order=True)
                         for frame in (batch, corpus))
    found = hamming_pairs(batch["wavelet_hash"].to_numpy(), corpus["wavelet_hash"].to_numpy(), radius)
    query, reference, score = found.query, found.reference, found.score
    if by_content:
        distinct = batch["content_hash"].to_numpy()[query] != corpus["content_hash"].to_numpy()[reference]
        query, reference, score = query[distinct], reference[distinct], score[distinct]
    names_a = batch["blob_name"].to_numpy()[query]
    names_b = corpus["blob_name"].to_numpy()[reference]
    signatures_a = _signatures(batch["color_signature"].gather(query))
    signatures_b = _signatures(corpus["color_signature"].gather(reference))
    pairs = pl.DataFrame({
        "name_1": names_a, "name_2": names_b, "hamming": score,
        "color_distance": color_distance(signatures_a, signatures_b).astype(np.float32),
    }, schema={"name_1": pl.String, "name_2": pl.String, "hamming": pl.Int32, "color_distance": pl.Float32})
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


def corpus_candidate_pairs(batch: pl.DataFrame, corpus: Iterable[pl.DataFrame], radius: int,
                           max_color: float) -> tuple[pl.DataFrame, int]:
    """`candidate_pairs` against stored partitions that arrive one at a time, and how many
    stored images were searched: memory of one group of partitions (a whole 3M-image corpus
    of hashes and colour signatures would take over 1 GB), whatever the corpus size."""
    found = [pl.DataFrame(schema=PAIR_SCHEMA)]
    searched = 0
    for partition in corpus:
        found.append(candidate_pairs(batch, partition, radius, max_color))
        searched += partition.height
    # A blob stored in two partitions would pair twice: each pair once, as before.
    pairs = pl.concat(found).unique(subset=["blob_a", "blob_b"], keep="first").sort("blob_a", "blob_b")
    return pairs, searched


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
    pairs, corpus_images = corpus_candidate_pairs(
        wavelet_hashes,
        # ~100 stored partitions searched at once: once per partition, polars' and faiss's
        # per-call costs took 12.6 s over 1M stored hashes, 6.6 s grouped.
        grouped(partitions(storage.layout, "wavelet_hashes",
                           ["blob_name", "content_hash", "wavelet_hash", "color_signature"]),
                STORED_ROWS_PER_SEARCH),
        config.hamming_radius, config.max_color_distance)
    context.log.info(f"{pairs.height} colour-agreeing near-hash pairs against {corpus_images} stored images")
    return dg.Output(pairs, metadata={
        "dagster/row_count": pairs.height,
        "corpus_images": corpus_images,
        **timing(wavelet_hashes.height, time.perf_counter() - started),
        "preview": markdown_preview(pairs),
    })
