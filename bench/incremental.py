"""Incremental cost and memory: the same batch of 1,000 real images added to stored
corpora of 0, 10k and 100k images, in one run (each size in a fresh process; its peak RSS is
counted from the start of the batch, after the synthetic corpus is written).

    .venv/bin/python bench/incremental.py [--sizes 0,10000,100000] [--search exact,index] [--probes 32,128] \
        [--specs "IVF1024,PQ64;PCA256,IVF1024,PQ64"]

Each stored size runs twice: the exact search over every stored embedding, and the
compressed index (`embedding_index.py`), trained and the stored partitions encoded
before the clock starts (once per corpus, kept in its folder: a partition is encoded
once, ever, not by every batch). `--probes 32,128` runs the index once per number of
inverted lists visited per query (`verified_pairs.index_probes`; by default the
pipeline's); `--specs` once per faiss factory spec of the index (`verified_pairs.index_spec`,
separated by ";"; by default the pipeline's). `--search train` runs the batch that trains
the index: the corpus without its index, `index_from` at the stored size, so the batch
searches exactly, then trains the codec (its time and peak RSS).

The stored corpus is synthetic but shaped like the real one: every column the later
stages read (64-bit hashes, 4x4 Lab signatures, float16 unit embeddings of 1280
dimensions from a clustered distribution, inventory rows, and 25 verified pairs per
image, 2 % of them duplicates), written as 1,000-image Parquet partitions.
Its signatures and embeddings lie far from the real batch's, so it costs search time
and memory but produces no candidate pairs (whose thumbnails would not exist).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

PARTITION = 1000


def synthetic_corpus(layout, count: int, dim: int = 1280, seed: int = 5) -> None:
    from dedup_assets.hash_stage import HASH_SCHEMA
    from dedup_assets.ledger import MANIFEST_SCHEMA

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, dim)).astype(np.float32)
    for start in range(0, count, PARTITION):
        n = min(PARTITION, count - start)
        key = f"stored-{start // PARTITION:06d}"
        names = [f"stored/{start + i:08d}.jpg" for i in range(n)]
        vectors = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=0.7, size=(n, dim)).astype(np.float32)
        vectors[:, :64] = -np.abs(vectors[:, :64]) * 4  # away from real embeddings (non-negative, post-ReLU)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        hashes = pl.DataFrame({
            "blob_name": names, "etag": ["e"] * n, "content_hash": [f"{start + i:064x}" for i in range(n)],
            "format": ["JPEG"] * n, "width": [1200] * n, "height": [900] * n,
            "picture_width": [1200] * n, "picture_height": [900] * n, "bytes": [200_000] * n,
            "jpeg_quality": [90] * n, "sharpness": [100.0] * n,
            "wavelet_hash": rng.integers(0, 2**63, n, dtype=np.uint64),
            "color_signature": [[250, 0, 250] * 16] * n, "thumbnail": ["missing.jpg"] * n,
        }, schema=HASH_SCHEMA).with_columns(pl.lit(key).alias("batch"))
        layout.write_parquet(hashes, layout.partition_path("wavelet_hashes", key))
        embeddings = pl.DataFrame({
            "blob_name": names, "content_hash": hashes["content_hash"], "model": ["efficientnet_lite0"] * n,
            "embedding": [v.astype("<f2").tobytes() for v in vectors],
        }).with_columns(pl.lit(key).alias("batch"))
        layout.write_parquet(embeddings, layout.partition_path("embeddings", key))
        inventory = pl.DataFrame({
            "blob_name": names, "size": [200_000] * n, "etag": ["e"] * n,
            "last_modified": [datetime(2026, 1, 1, tzinfo=timezone.utc)] * n, "content_md5": [None] * n,
        }, schema=MANIFEST_SCHEMA).with_columns(pl.lit(key).alias("batch"))
        layout.write_parquet(inventory, layout.partition_path("blob_inventory", key))
        layout.write_parquet(synthetic_pairs(rng, names, hashes["content_hash"].to_list(), key),
                             layout.partition_path("verified_pairs", key))


def synthetic_pairs(rng, names: list[str], contents: list[str], key: str, per_image: int = 25,
                    duplicate_share: float = 0.02):
    """What verification stores for a batch: ~25 verified pairs per image (as measured on
    look-alike images), a few percent of them duplicates, with every column."""
    from dedup_assets.verify_stage import VERIFIED_SCHEMA

    count = len(names) * per_image
    a = rng.integers(0, len(names), count)
    b = (a + rng.integers(1, len(names), count)) % len(names)
    duplicate = rng.random(count) < duplicate_share
    return pl.DataFrame({
        "blob_a": [names[i] for i in a], "blob_b": [names[i] for i in b], "found_by": ["embedding"] * count,
        "hamming": rng.integers(10, 40, count), "color_distance": rng.random(count) * 30,
        "cosine": rng.random(count), "matches": rng.integers(0, 60, count),
        "inliers": np.where(duplicate, 80, 4), "coverage_a": rng.random(count), "coverage_b": rng.random(count),
        "inlier_spread": rng.random(count), "agreement": rng.random(count), "mirrored": [False] * count,
        "is_duplicate": duplicate, "decided_by": ["verify"] * count,
        "reason": np.where(duplicate, "80 inliers, shared region covers 90% / 85%", "4 inliers < 15"),
        "content_a": [contents[i] for i in a], "content_b": [contents[i] for i in b],
    }, schema=VERIFIED_SCHEMA).with_columns(pl.lit(key).alias("batch"))


def stored_corpus(stored: int) -> Path:
    """The synthetic corpus of this size, written once under $DEDUP_HOME/bench and reused
    by later runs (each run links its files into a fresh home: they are never rewritten)."""
    from dedup_assets.storage import StorageLayout

    folder = Path(os.environ["DEDUP_HOME"]) / "bench" / f"stored_corpus_{stored}"
    if not (folder / "complete").exists():
        print(f"writing a synthetic corpus of {stored} images in {folder} ...", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        synthetic_corpus(StorageLayout(folder), stored)
        (folder / "complete").touch()
    return folder


def prepare_index(corpus: str, stored: int, model: str, spec: str) -> float:
    """The compressed index of the stored corpus, trained and its partitions encoded, kept
    in the corpus folder (each partition is encoded once, ever: not the batch's work).
    Returns the seconds it took here (0 when it was already there)."""
    from dedup_assets.embedding_index import EmbeddingIndex
    from dedup_assets.storage import StorageLayout

    started = time.perf_counter()
    index = EmbeddingIndex(StorageLayout(corpus), model, spec)
    if not index.trained:
        index.train_from_store(stored)
    for _ in index.stored_codes():
        pass
    return time.perf_counter() - started


def one_size(images: str, stored: int, corpus: str, search: str, probes: int, spec: str) -> dict:
    import dagster as dg

    from dedup_assets.assets import pipeline_assets
    from dedup_assets.embedding_stage import cached_embedder
    from dedup_assets.io_manager import storage_resources
    from dedup_assets.ledger import BatchLedger
    from dedup_assets.resources import DedupStorageResource, ImageSourceResource
    from dedup_assets.storage import StorageLayout

    embedder = cached_embedder("efficientnet_lite0", None, "auto")  # a run process loads it once
    prepared = prepare_index(corpus, stored, embedder.name, spec) if search == "index" and stored else 0.0
    # exact: every stored embedding read and multiplied; index: the stored codes ranked;
    # train: exact, then the codec trained on the store (no index copied in).
    index_from = {"index": 1, "train": max(stored, 1)}.get(search, 0)
    run_config = {"ops": {"verified_pairs": {"config": {"index_from": index_from,
                                                        "index_probes": probes, "index_spec": spec}}}}
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.ephemeral() as instance:
        shutil.copytree(corpus, home, dirs_exist_ok=True, copy_function=os.link,
                        ignore=shutil.ignore_patterns("embedding_index") if search == "train" else None)
        layout = StorageLayout(home)
        resources = {"image_source": ImageSourceResource(uri=images), **storage_resources(DedupStorageResource(home=home))}
        keys = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 100_000)
        instance.add_dynamic_partitions("batches", keys)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Building the synthetic corpus is not the batch's work: measure from here on.
        batch_peak_measured = reset_peak_rss()
        started = time.perf_counter()
        result = dg.materialize(pipeline_assets, partition_key=keys[0], instance=instance, resources=resources,
                                run_config=run_config)
        seconds = time.perf_counter() - started
        assert result.success
        stages = {e.asset_key.path[-1]: e.materialization.metadata["seconds"].value
                  for e in result.get_asset_materialization_events()}
    peak_mb = peak_rss_kb() / 1024 if batch_peak_measured else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    label = {"index": f"index/{probes} {spec}", "train": f"train {spec}"}.get(search, search)
    return {"stored": stored, "search": label, "seconds": seconds, "stages": stages, "peak_rss_mb": peak_mb,
            "rss_before_mb": before / 1024, "index_prepared_s": prepared}


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (Linux's clear_refs 5) after freeing what the
    corpus generation left; False where that is not possible (then the process peak)."""
    import gc

    from dedup_assets.memory import release_freed_memory

    gc.collect()
    release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="0,10000,100000")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--search", default="exact,index",
                        help="exact (every stored embedding), index (the compressed index), train (the "
                             "batch that trains the index), or several, comma-separated")
    parser.add_argument("--probes", help="index only: inverted lists visited per query, e.g. 32,128 "
                                          "(default: the pipeline's)")
    parser.add_argument("--specs", help='index only: faiss factory specs separated by ";", e.g. '
                                         '"IVF1024,PQ64;PCA256,IVF1024,PQ64" (default: the pipeline\'s)')
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size, JSON out
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from dedup_assets.settings import apply_defaults

    apply_defaults()
    from dedup_assets.embedding_index import DEFAULT_SPEC, PROBES

    args.probes = args.probes or str(PROBES)
    args.specs = args.specs or DEFAULT_SPEC
    if args.one is not None:
        print(json.dumps(one_size(args.images, args.one, args.corpus, args.search, int(args.probes), args.specs)))
        return
    from dedup_assets.demo_data import build_distinct_set

    images = Path(os.environ["DEDUP_HOME"]) / "bench" / f"distinct_{args.batch}"
    if len(list(images.glob("*.jpg")) if images.exists() else []) != args.batch:
        print(f"generating {args.batch} images in {images} ...")
        build_distinct_set(images, args.batch, seed=41)
    # The first process ever exports the network to ONNX (importing PyTorch); every later
    # one loads the recorded export without it. Measure the later kind.
    subprocess.run([sys.executable, "-c", "from dedup_assets.settings import apply_defaults; apply_defaults(); "
                    "from dedup_assets.embedding_stage import cached_embedder; "
                    "cached_embedder('efficientnet_lite0', None, 'auto')"], check=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        searches = [(search, probes, spec) for search in (args.search.split(",") if size else ["exact"])  # nothing
                    for probes in (args.probes.split(",") if search == "index" else [str(PROBES)])  # stored: no index
                    for spec in (args.specs.split(";") if search in ("index", "train") else [DEFAULT_SPEC])]
        for search, probes, spec in searches:
            done = subprocess.run([sys.executable, __file__, "--one", str(size), "--images", str(images),
                                   "--corpus", str(stored_corpus(size)), "--search", search, "--probes", probes,
                                   "--specs", spec],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"stored {size:>7}, {rows[-1]['search']}: {rows[-1]['seconds']:.1f} s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB"
                  + (f" (index prepared first: {rows[-1]['index_prepared_s']:.0f} s)" if search == "index" else ""),
                  flush=True)
    base = rows[0]["seconds"]
    stages = list(rows[0]["stages"])
    width = max(len(row["search"]) for row in rows) + 2
    print(f"\n{'stored images':>14}{'search':>{width}}{'batch s':>9}{'× empty':>9}{'peak RSS MB':>13}  "
          + "  ".join(f"{s[:12]:>12}" for s in stages))
    for row in rows:
        print(f"{row['stored']:>14}{row['search']:>{width}}{row['seconds']:>9.1f}{row['seconds'] / base:>9.2f}"
              f"{row['peak_rss_mb']:>13.0f}  " + "  ".join(f"{row['stages'].get(s, 0):>12.2f}" for s in stages))


if __name__ == "__main__":
    main()
