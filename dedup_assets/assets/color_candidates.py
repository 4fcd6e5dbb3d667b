import time
from typing import Iterable

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from dedup_assets.assets.reporting import markdown_preview, timing
from dedup_assets.corpus import grouped, partitions
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import DedupStorageResource
from dedup_assets.vision.color import SIGNATURE_SIZE
from dedup_assets.vision.hamming import nearest_hashes


# Per image, the nearest this many by hash and colour together. Hashes of mostly flat
# frames collide (products on white hash to 0): among 1,000 such shots every one had
# ~350 partners, and in a corpus of millions the pairs would grow with its square.
NEAREST_PER_IMAGE = 32


class ColorCandidatesConfig(dg.Config):
    hamming_radius: int = Field(10, ge=0, le=64)  # bits of 64
    max_color_distance: float = Field(12.0, gt=0)  # mean |ΔLab| per grid cell
    neighbours: int = Field(NEAREST_PER_IMAGE, ge=1)


STORED_ROWS_PER_SEARCH = 100_000  # ~10 MB of names, hashes and colour signatures

PAIR_SCHEMA = {"blob_a": pl.String, "blob_b": pl.String, "hamming": pl.Int32, "color_distance": pl.Float32}
NEAREST_SCHEMA = {"name_1": pl.String, "name_2": pl.String, "key_2": pl.String, "hamming": pl.Int32,
                  "color_distance": pl.Float32}


def _signatures(column: pl.Series) -> np.ndarray:
    if not len(column):
        return np.zeros((0, SIGNATURE_SIZE), np.uint8)
    values = column.to_numpy()
    return values if values.ndim == 2 else np.stack(values)  # an Array column is 2-D already


def nearest_pairs(batch: pl.DataFrame, corpus: pl.DataFrame, radius: int, max_color: float,
                  neighbours: int) -> pl.DataFrame:
    """Each batch image's `neighbours` nearest corpus images within `radius` bits whose
    colour signatures agree (`nearest_hashes`), as name_1 (batch), name_2, key_2 (what
    ranks and identifies name_2: its content, or its name), hamming, color_distance.

    With content hashes given, one copy of each content takes part on either side and
    byte-identical copies never pair: they are one image (`clusters` groups them by
    content), and a picture stored N times would otherwise give N(N-1)/2 pairs."""
    key = "content_hash" if "content_hash" in batch.columns and "content_hash" in corpus.columns else "blob_name"
    if key == "content_hash":
        batch, corpus = (frame.unique(subset=key, keep="first", maintain_order=True) for frame in (batch, corpus))
    # Codes ordered as the keys: equal for one image (or content), ties broken by name.
    codes = pl.concat([batch[key], corpus[key]]).rank("dense").cast(pl.Int64).to_numpy()
    query, reference, hamming, colour = nearest_hashes(
        batch["wavelet_hash"].to_numpy(), _signatures(batch["color_signature"]), codes[:batch.height],
        corpus["wavelet_hash"].to_numpy(), _signatures(corpus["color_signature"]), codes[batch.height:],
        radius, max_color, neighbours)
    return pl.DataFrame({
        "name_1": batch["blob_name"].to_numpy()[query], "name_2": corpus["blob_name"].to_numpy()[reference],
        "key_2": corpus[key].to_numpy()[reference], "hamming": hamming, "color_distance": colour,
    }, schema=NEAREST_SCHEMA)


def nearest_per_image(found: pl.DataFrame, radius: int, max_color: float, neighbours: int) -> pl.DataFrame:
    """Searches' nearest pairs merged: per batch image its `neighbours` best, ranked as
    `nearest_hashes` ranks them, one per content (a content stored twice pairs once)."""
    # The same float64 arithmetic as the search's, so the ranks agree exactly.
    score = (pl.col("hamming").cast(pl.Float64) / (radius + 1.0)
             + pl.col("color_distance").cast(pl.Float64) * (1.0 / max(max_color, 1e-9)))
    return (found.sort([score, "key_2", "name_2"])
            .unique(subset=["name_1", "key_2"], keep="first", maintain_order=True)
            .group_by("name_1", maintain_order=True).head(neighbours))


def unordered(found: pl.DataFrame) -> pl.DataFrame:
    """Each unordered pair once, as blob_a < blob_b."""
    return (
        found.select(
            pl.min_horizontal("name_1", "name_2").alias("blob_a"),
            pl.max_horizontal("name_1", "name_2").alias("blob_b"),
            "hamming", "color_distance",
        )
        .unique(subset=["blob_a", "blob_b"], keep="first")
        .sort("blob_a", "blob_b")
        .cast(PAIR_SCHEMA)
    )


def candidate_pairs(batch: pl.DataFrame, corpus: pl.DataFrame, radius: int, max_color: float,
                    neighbours: int = NEAREST_PER_IMAGE) -> pl.DataFrame:
    """Near-hash pairs between a batch and the whole corpus (itself included), whose
    colour signatures agree: per batch image its `neighbours` nearest (`nearest_pairs`)."""
    return unordered(nearest_per_image(nearest_pairs(batch, corpus, radius, max_color, neighbours),
                                       radius, max_color, neighbours))


def corpus_candidate_pairs(batch: pl.DataFrame, corpus: Iterable[pl.DataFrame], radius: int,
                           max_color: float, neighbours: int = NEAREST_PER_IMAGE
                           ) -> tuple[pl.DataFrame, int]:
    """`candidate_pairs` against stored partitions that arrive one at a time, and how many
    stored images were searched: memory of one group of partitions (a whole 3M-image corpus
    of hashes and colour signatures would take over 1 GB) and of `neighbours` pairs per
    batch image, whatever the corpus size."""
    found = pl.DataFrame(schema=NEAREST_SCHEMA)
    searched = 0
    for partition in corpus:
        # Each search's best only: what the next partitions bring can only displace them.
        found = nearest_per_image(pl.concat([found, nearest_pairs(batch, partition, radius, max_color, neighbours)]),
                                  radius, max_color, neighbours)
        searched += partition.height
    return unordered(found), searched


@dg.asset(
    partitions_def=batch_partitions,
    group_name="cascade",
    kinds={"numba", "parquet"},
    io_manager_key="parquet_io_manager",
)
def color_candidates(
    context: dg.AssetExecutionContext,
    config: ColorCandidatesConfig,
    wavelet_hashes: pl.DataFrame,
    storage: DedupStorageResource,
) -> dg.Output[pl.DataFrame]:
    """Pairs whose wavelet hashes lie within a Hamming radius, kept when their colour
    signatures agree: per image its nearest few by both. The batch is searched against
    itself and every other stored batch, so a later batch finds its duplicates among
    earlier ones."""
    started = time.perf_counter()
    pairs, corpus_images = corpus_candidate_pairs(
        wavelet_hashes,
        # ~100 stored partitions searched at once: once per partition, the per-call
        # costs took 12.6 s over 1M stored hashes, 6.6 s grouped (faiss's search then).
        grouped(partitions(storage.layout, "wavelet_hashes",
                           ["blob_name", "content_hash", "wavelet_hash", "color_signature"]),
                STORED_ROWS_PER_SEARCH),
        config.hamming_radius, config.max_color_distance, config.neighbours)
    context.log.info(f"{pairs.height} colour-agreeing near-hash pairs against {corpus_images} stored images")
    return dg.Output(pairs, metadata={
        "dagster/row_count": pairs.height,
        "corpus_images": corpus_images,
        **timing(wavelet_hashes.height, time.perf_counter() - started),
        "preview": markdown_preview(pairs),
    })
