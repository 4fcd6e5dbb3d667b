import functools
import time
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from dedup_assets.assets.reporting import log_progress, markdown_preview, timing
from dedup_assets.plots import markdown_image, similarity_distributions
from dedup_assets.corpus import resident_embeddings
from dedup_assets.embedding_index import DEFAULT_SPEC, PROBES as INDEX_PROBES, cross_batch_pairs
from dedup_assets.memory import release_freed_memory
from dedup_assets.partitions import batch_partitions
from dedup_assets.placement import GPU_POOL, gpu_step_tags
from dedup_assets.resources import DedupStorageResource
from dedup_assets.verify_stage import (one_pair_per_content, verification_features, verify_large_families, verify_pairs,
                                       with_hash_pairs_cosines)
from dedup_assets.vision.cascade import CascadePolicy
from dedup_assets.vision.verify import ORB_FEATURES, VERIFY_SIDE, load_verifier


class VerifiedPairsConfig(dg.Config):
    min_similarity: float = Field(0.5, ge=-1, le=1)  # embedding cosine for a candidate pair
    neighbours: int = Field(32, ge=1)  # per image, in the embedding search
    # From this many stored embeddings on, the search across batches goes through a
    # compressed index (trained once, ~66 bytes per image) instead of reading and
    # multiplying every stored embedding; 0: always exact. Candidates' cosines stay exact.
    index_from: int = Field(200_000, ge=0)
    index_spec: str = Field(DEFAULT_SPEC, pattern="IVF")  # faiss factory string; must contain an IVF
    index_probes: int = Field(INDEX_PROBES, ge=1)  # inverted lists visited per query
    # Stored embeddings the exact search keeps decoded in this process for the next
    # batch (`dedup run`, a long-lived worker): each batch then reads only partitions
    # new since. 256 MB hold ~100k images; a GPU host searching millions exactly: more.
    resident_embeddings_mb: int = Field(256, ge=0)
    # orb (CPU), torch-orb, aliked, lightglue or loftr (GPU)
    verifier: Literal["orb", "torch-orb", "aliked", "lightglue", "loftr"] = "orb"
    verifier_checkpoint: str | None = None  # local LoFTR checkpoint
    # Longest side, in pixels, images are matched at (ORB leaves a 31 px margin on each side).
    verify_side: int = Field(VERIFY_SIDE, ge=64)
    orb_features: int = Field(ORB_FEATURES, ge=4)  # keypoints per image for the orb verifier
    # Keep each image's ORB features beside its thumbnail (~40 KB), so images already
    # stored are not described again by every later batch that pairs with them.
    keep_features: bool = True
    device: str = "auto"
    # On a GPU: pairs that no homography could pass are rejected there, before the host's
    # fits (vision/consensus.py); false: every matched pair is fitted on the host.
    screen_fits: bool = True
    # With the screen: every screened pair's homography is found on the GPU too (a batched
    # RANSAC scored as MSAC), and the host only measures the fits with enough inliers
    # (coverage, pixel agreement); false: the pairs the screen leaves are fitted on the
    # host by USAC_MAGSAC, which bound verification there (docs/performance.md §7).
    device_fits: bool = True
    # Where the screen and the device fits run: auto, the GPU verification uses (none on a
    # CPU host); or a PyTorch device by name ("cpu": to check their decisions without a GPU).
    screen_device: str = "auto"
    # Threads verifying pairs; 0: one per core, at most 4 (`verify_stage.VERIFY_THREADS_CAP`: beyond ~4 the
    # fits' Python, which holds the GIL, makes threads wait on each other: docs/performance.md §7).
    workers: int = Field(0, ge=0)
    accept_hamming: int = Field(4, ge=0, le=64)  # bits of 64
    min_inliers: int = Field(15, ge=4)  # a homography takes 4 points
    min_coverage: float = Field(0.55, ge=0, le=1)
    min_agreement: float = Field(0.6, ge=-1, le=1)  # a correlation
    # ... or this share of the overlap's windows agreeing (an overlay)
    min_window_agreement: float = Field(0.75, ge=0, le=1)
    min_spread: float = Field(0.01, ge=0, le=1)  # the inliers' hull, as a share of the smaller image
    candidate_hamming: int = Field(10, ge=0, le=64)  # keep equal to color_candidates.hamming_radius
    grayscale_is_duplicate: bool = True
    mirrored_is_duplicate: bool = False


_load_verifier = functools.lru_cache(maxsize=2)(load_verifier)


@dg.asset(
    partitions_def=batch_partitions,
    group_name="cascade",
    kinds={"opencv", "kornia", "parquet"},
    io_manager_key="parquet_io_manager",
    pool=GPU_POOL,
    op_tags=gpu_step_tags(),
)
def verified_pairs(
    context: dg.AssetExecutionContext,
    config: VerifiedPairsConfig,
    color_candidates: pl.DataFrame,
    embeddings: pl.DataFrame,
    storage: DedupStorageResource,
) -> dg.Output[pl.DataFrame]:
    """Candidates from both searches (near-hash + colour, and embedding neighbours over
    every stored batch: exact, or through a compressed index in a large corpus), decided
    by the cascade: near-identical hashes are accepted, the uncertain rest verified
    geometrically. Every pair is kept with its scores, the stage that decided and why."""
    started = time.perf_counter()
    layout = storage.layout
    # Stored embeddings are streamed a partition at a time (memory does not grow with the
    # corpus), or, in a large corpus, their compressed codes.
    # One copy of each content searches: byte-identical copies are one image to `clusters`.
    searching = embeddings.unique(subset="content_hash", keep="first", maintain_order=True)
    from_embeddings, searched = cross_batch_pairs(searching, layout, context.partition_key, config.min_similarity,
                                                  config.neighbours, config.index_from, config.index_spec,
                                                  config.index_probes, config.resident_embeddings_mb * 2**20)
    candidates = pl.concat([
        color_candidates.select("blob_a", "blob_b", pl.lit("hash").alias("source"),
                                pl.lit(None, pl.Float32).alias("cosine")),
        from_embeddings.select("blob_a", "blob_b", pl.lit("embedding").alias("source"), "cosine"),
    ])
    features = verification_features(layout, set(candidates["blob_a"]) | set(candidates["blob_b"]))
    # A concurrent run may have hashed its batch but not embedded it yet: such a pair
    # waits for that batch's own run, which searches it against this one.
    ready = candidates["blob_a"].is_in(features["blob_name"]) & candidates["blob_b"].is_in(features["blob_name"])
    deferred = int(candidates.filter(~ready).select("blob_a", "blob_b").n_unique()) if candidates.height else 0
    candidates = with_hash_pairs_cosines(one_pair_per_content(candidates.filter(ready), features), layout)
    policy = CascadePolicy(accept_hamming=config.accept_hamming, min_inliers=config.min_inliers,
                           min_coverage=config.min_coverage, min_agreement=config.min_agreement,
                           min_window_agreement=config.min_window_agreement,
                           min_spread=config.min_spread, candidate_hamming=config.candidate_hamming,
                           grayscale_is_duplicate=config.grayscale_is_duplicate,
                           mirrored_is_duplicate=config.mirrored_is_duplicate)
    verifier = _load_verifier(config.verifier, config.device, allow_mirrored=config.mirrored_is_duplicate,
                              checkpoint=config.verifier_checkpoint, side=config.verify_side,
                              min_inliers=config.min_inliers, orb_features=config.orb_features,
                              min_coverage=config.min_coverage, screen_fits=config.screen_fits,
                              device_fits=config.device_fits, screen_device=config.screen_device)
    pairs, seconds = verify_pairs(candidates, features, layout, verifier, policy, config.workers,
                                  on_progress=log_progress(context.log, "verified"),
                                  keep_features=config.keep_features)
    # A family of more copies than the searches' neighbours: its members are verified against
    # the copies likeliest to be kept too, or it splits into several groups.
    more, more_seconds, families = verify_large_families(pairs, set(embeddings["blob_name"]), features, layout,
                                                         verifier, policy, config.neighbours, config.workers,
                                                         keep_features=config.keep_features)
    if families:
        pairs, seconds = pl.concat([pairs, more]), seconds + more_seconds
        context.log.info(f"{families} famil{'y' if families == 1 else 'ies'} of more than {config.neighbours} "
                         f"copies: {more.height} more pairs verified, each member against the copies likeliest "
                         "to be kept")
    verified = pairs.height  # every pair, near-identical ones included (for detail their hashes miss)
    release_freed_memory()  # batch after batch in one process: keep RSS flat
    return dg.Output(pairs, metadata={
        "dagster/row_count": pairs.height,
        "duplicates": int(pairs["is_duplicate"].sum()) if pairs.height else 0,
        "geometrically_verified": verified,
        "deferred_pairs": deferred,
        "embedding_search": searched,
        # The exact search's reads: the other stored partitions were held from earlier batches.
        **({"stored_partitions_read": resident_embeddings.last_reads} if searched.startswith("exact") else {}),
        "verifier": verifier.name,
        "pairs_per_second": round(verified / max(seconds, 1e-9), 1),
        **timing(embeddings.height, time.perf_counter() - started),
        "similarity": dg.MetadataValue.md(markdown_image(similarity_distributions({
            score: (pairs.filter(pl.col("is_duplicate"))[score].drop_nulls().to_numpy(),
                    pairs.filter(~pl.col("is_duplicate"))[score].drop_nulls().to_numpy())
            for score in ("hamming", "cosine", "inliers")
        }), "pair scores: duplicates vs distinct")),
        "decided_by": dg.MetadataValue.json(
            {str(k): int(v) for k, v in pairs.group_by("decided_by").len().rows()} if pairs.height else {}
        ),
        "preview": markdown_preview(pairs.filter(pl.col("is_duplicate"))),
    })
