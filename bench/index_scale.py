"""A 3M-image simulation of the two candidate indexes: memory per image, build time and
the time to search a new batch of 10k, beside the exact (flat) search in the same run.

    .venv/bin/python bench/index_scale.py [--count 3000000] [--queries 10000]

- Hashes: 64-bit wavelet hashes and colour signatures searched by color_candidates' own
  `corpus_candidate_pairs` (each query's 32 nearest within Hamming radius 10, stored
  chunks of 100k), beside faiss's binary flat range search, and again with a fifth
  of the corpus flat frames that all hash to 0.
- Embeddings: 1280-d unit vectors, as the embeddings stage writes them, in the pipeline's
  compressed index (`embedding_index`: its factory spec, training sample, probes and
  8 × 32 candidates per query, through the same functions: `train_codec`, `encode`,
  `coded_neighbours`) beside exact inner-product search over the same vectors, measured
  on a subset that fits (the flat float32 index of 3M would need 15 GB).
The vectors are synthetic (clusters around random centres, unit length); each query is a
perturbed copy of a stored vector, so whether the copy is among the query's candidates
(which the pipeline then re-ranks exactly) or its 32 exact neighbours is measurable.
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import numpy as np
import polars as pl

from dedup_assets.assets.color_candidates import corpus_candidate_pairs
from dedup_assets.embedding_index import CANDIDATES_PER_NEIGHBOUR, DEFAULT_SPEC, PROBES, TRAINING_SAMPLE
from dedup_assets.vision.hashing import hash_to_bytes
from dedup_assets.vision.search import coded_neighbours, encode, train_codec


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def vectors(rng, centres, n, noise=0.5):
    out = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=noise, size=(n, centres.shape[1])).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--exact-subset", type=int, default=300_000)
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="faiss factory spec (default: the pipeline's)")
    parser.add_argument("--nprobe", type=int, default=PROBES, help="lists visited per query (default: the pipeline's)")
    parser.add_argument("--hashes-only", action="store_true", help="skip the embedding indexes")
    args = parser.parse_args()
    faiss.omp_set_num_threads(faiss.omp_get_max_threads())
    rng = np.random.default_rng(3)
    chunk = 100_000
    print(f"{args.count:,} images, {args.queries:,} queries, {faiss.omp_get_max_threads()} threads\n")

    # Hashes: color_candidates' own search over stored chunks of 100k (each query's 32
    # nearest by hash and colour) beside faiss's range search over the same hashes.
    # Colour signatures: 48 bytes around one tone.
    hashes = rng.integers(0, 2**63, size=args.count, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    hashes |= rng.integers(0, 2, size=args.count).astype(np.uint64)
    colours = rng.integers(100, 108, size=(args.count, 48), dtype=np.uint8)
    picked = rng.integers(0, args.count, args.queries)
    queries = hashes[picked].copy()
    for bits in rng.integers(0, 64, size=(4, args.queries)):
        queries ^= np.uint64(1) << bits.astype(np.uint64)

    def frame(prefix, hashes, colours):
        """Rows as the hash stage stores them (names and contents unique per row)."""
        numbers = pl.int_range(0, len(hashes), eager=True).cast(pl.String)
        return pl.DataFrame({
            "blob_name": prefix + numbers.str.zfill(7), "content_hash": prefix + numbers.str.zfill(63),
            "wavelet_hash": pl.Series(hashes, dtype=pl.UInt64),
            "color_signature": pl.Series(colours, dtype=pl.Array(pl.UInt8, colours.shape[1])),
        })

    batch = frame("q", queries, colours[picked])
    wanted = ("s" + pl.Series(picked).cast(pl.String).str.zfill(7)).to_list()

    def pipeline_search(stored):
        """The stage's own search over stored chunks of 100k: each query's 32 best."""
        started = time.perf_counter()
        pairs, _ = corpus_candidate_pairs(batch, (stored.slice(start, chunk) for start in range(0, args.count, chunk)),
                                          10, 12.0)
        seconds = time.perf_counter() - started
        found = dict(pairs.group_by("blob_a").agg("blob_b").rows())  # queries' names sort first
        recall = np.mean([wanted[i] in found.get(name, ()) for i, name in enumerate(batch["blob_name"])])
        return seconds, recall, max(map(len, found.values()), default=0)

    corpus_candidate_pairs(batch.head(2), iter([batch.head(2)]), 10, 12.0)  # numba's compiled code loaded
    stored = frame("s", hashes, colours)
    search, recall, most = pipeline_search(stored)
    print(f"hashes, nearest 32 (pipeline): {56:>3} B/image streamed, none held  "
          f"search {search:6.1f} s ({args.queries / search:,.0f} queries/s)  recall {recall:.3f}  "
          f"most pairs per query {most}")
    before = rss_mb()
    started = time.perf_counter()
    binary = faiss.IndexBinaryFlat(64)
    binary.add(hash_to_bytes(hashes))
    build = time.perf_counter() - started
    started = time.perf_counter()
    lims, distances, labels = binary.range_search(hash_to_bytes(queries), 11)  # < 11: radius 10
    faiss_search = time.perf_counter() - started
    recall = np.mean([picked[i] in labels[lims[i]:lims[i + 1]] for i in range(args.queries)])
    print(f"hashes, faiss binary flat range (baseline): {8:>3} B/image  build {build:6.1f} s  "
          f"search {faiss_search:6.1f} s ({args.queries / faiss_search:,.0f} queries/s)  "
          f"RSS +{rss_mb() - before:,.0f} MB  recall {recall:.3f}  most pairs per query {np.diff(lims).max()}")
    del binary, lims, distances, labels, stored
    # A fifth of the corpus flat frames (products on white: hash 0, alike colours), and a
    # fifth of the queries: a range search would return ~600k pairs for each of those.
    flat = rng.random(args.count) < 0.2
    hashes[flat] = 0
    batch = batch.with_columns(pl.when(pl.int_range(pl.len()) < args.queries // 5).then(0)
                               .otherwise(pl.col("wavelet_hash")).cast(pl.UInt64).alias("wavelet_hash"))
    search, _, most = pipeline_search(frame("s", hashes, colours))
    print(f"hashes, nearest 32, a fifth flat frames:  search {search:6.1f} s  most pairs per query "
          f"{most}  (a range search: {int(flat.sum()):,} for each flat query)")
    del hashes, colours
    if args.hashes_only:
        return

    # Embeddings, through the pipeline's own index functions.
    centres = rng.normal(size=(20_000, args.dim)).astype(np.float32)
    train = vectors(rng, centres, TRAINING_SAMPLE)
    before = rss_mb()
    started = time.perf_counter()
    codec = train_codec(train, args.spec)
    trained = time.perf_counter() - started
    del train
    queries_source = rng.integers(0, args.count, args.queries)
    probe = {}
    wanted = set(queries_source.tolist())
    started = time.perf_counter()
    stored_codes = []
    for start in range(0, args.count, chunk):
        block = vectors(rng, centres, min(chunk, args.count - start))
        stored_codes.append(encode(codec, block))
        for position in wanted & set(range(start, start + len(block))):
            probe[position] = block[position - start].copy()  # not a view: the block must go
    added = time.perf_counter() - started
    stored_probe = np.stack([probe[p] for p in queries_source])
    query_vectors = stored_probe + rng.normal(scale=0.02, size=stored_probe.shape).astype(np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    _, found_ids = coded_neighbours(codec, stored_codes, query_vectors, CANDIDATES_PER_NEIGHBOUR * 32, args.nprobe)
    search = time.perf_counter() - started
    recall = np.mean([queries_source[i] in found_ids[i] for i in range(args.queries)])
    size = sum(codes.nbytes for codes in stored_codes)
    print(f"embeddings, {args.spec}, {args.nprobe} probes: {size / args.count:>5.0f} B/image  train {trained:6.1f} s  "
          f"encode {added:6.1f} s  search {search:6.1f} s ({args.queries / search:,.0f} queries/s)  "
          f"RSS +{rss_mb() - before:,.0f} MB  copy among the {CANDIDATES_PER_NEIGHBOUR * 32} candidates {recall:.3f}")
    del stored_codes

    # Exact search (flat inner product over float32), on a subset that fits.
    subset = args.exact_subset
    stored = vectors(rng, centres, subset)
    picked = rng.integers(0, subset, args.queries)
    query_vectors = stored[picked] + rng.normal(scale=0.02, size=(args.queries, args.dim)).astype(np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(stored)
    build = time.perf_counter() - started
    started = time.perf_counter()
    _, found_ids = flat.search(query_vectors, 32)
    search = time.perf_counter() - started
    recall = np.mean([picked[i] in found_ids[i] for i in range(args.queries)])
    per_image = args.dim * 4
    print(f"embeddings, exact flat, {subset:,} images: {per_image} B/image  build {build:6.1f} s  "
          f"search {search:6.1f} s; at {args.count:,}: {per_image * args.count / 1e9:.1f} GB and about "
          f"{search * args.count / subset:.0f} s per {args.queries:,} queries  recall@32 {recall:.3f}")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
