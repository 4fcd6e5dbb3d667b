"""How many edited copies the compressed embedding index finds, beside the exact search
over the same real embeddings, in the same run, for several index specs.

    .venv/bin/python bench/index_recall.py [--stored 50000] [--copies 800] \
        [--specs "IVF1024,PQ64;PCA256,IVF1024,PQ64"]

The stored corpus is `--stored` distinct synthetic look-alike images (bench/memory_scale.py's
set, generated once under $DEDUP_HOME/bench), embedded as the pipeline embeds them (reduced
decode → thumbnail JPEG → embedder), cached beside it. `--copies` edited copies of stored
images (the hard set's edits, `demo_data.HARD_TRANSFORMS` minus recolor, which makes a
different photo) are the queries. A copy counts as found when its original is among its
32 neighbours at cosine ≥ 0.5, the pipeline's search: exactly over every stored float16
embedding, or through the index (8 × 32 candidates ranked by the codes, 128 lists probed,
then re-ranked by their exact cosines, as `embedding_index.indexed_embedding_pairs`).
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dedup_assets.settings import apply_defaults

K, FLOOR = 32, 0.5


def embed_files(embedder, datas: list[bytes], batch: int = 8) -> np.ndarray:
    """Embeddings as the pipeline makes them: the hash stage's thumbnail JPEG, decoded as
    the embeddings stage decodes it, then the embedder."""
    from dedup_assets.embedding_stage import decode_thumbnail
    from dedup_assets.vision.features import extract_features

    out = []
    for start in range(0, len(datas), batch):
        thumbs = [decode_thumbnail(extract_features(data).thumbnail_jpeg, "bench image")
                  for data in datas[start:start + batch]]
        out.append(embedder.embed(thumbs, batch_size=batch))
    return np.concatenate(out).astype(np.float16)  # stored as float16, as in the pipeline


def stored_embeddings(embedder, folder: Path, count: int) -> np.ndarray:
    cache = folder.parent / f"{folder.name}.{embedder.name}.{count}.npy"
    if cache.exists():
        return np.load(cache)
    files = sorted(folder.iterdir())[:count]
    vectors = []
    with tqdm(total=len(files), desc="embedding the stored corpus", unit="image") as progress:
        for start in range(0, len(files), 256):
            vectors.append(embed_files(embedder, [f.read_bytes() for f in files[start:start + 256]]))
            progress.update(len(vectors[-1]))
    matrix = np.concatenate(vectors)
    np.save(cache, matrix)
    return matrix


def edited_copies(folder: Path, count: int, stored: int, seed: int = 5) -> tuple[list[bytes], np.ndarray, list[str]]:
    from PIL import Image

    from dedup_assets.demo_data import HARD_TRANSFORMS, transform

    rng = random.Random(seed)
    originals = np.array(sorted(rng.sample(range(stored), count)))
    files = sorted(folder.iterdir())
    kinds = [k for k in HARD_TRANSFORMS if k != "recolor"]
    datas, labels = [], []
    for original in originals:
        kind = kinds[len(labels) % len(kinds)]
        with Image.open(files[original]) as image:
            edited, fmt, options = transform(image.convert("RGB"), kind, rng)
        buffer = io.BytesIO()
        edited.save(buffer, format=fmt, **options)
        datas.append(buffer.getvalue())
        labels.append(kind)
    return datas, originals, labels


def found_exact(queries: np.ndarray, stored: np.ndarray, originals: np.ndarray) -> np.ndarray:
    from dedup_assets.vision.search import streamed_neighbours

    chunks = (stored[i:i + 50_000].astype(np.float32) for i in range(0, len(stored), 50_000))
    pairs = streamed_neighbours(queries, chunks, FLOOR, K)
    return np.array([originals[q] in set(pairs.reference[pairs.query == q]) for q in range(len(queries))])


def found_indexed(queries: np.ndarray, stored: np.ndarray, originals: np.ndarray, spec: str,
                  probes: int) -> tuple[np.ndarray, dict]:
    from dedup_assets.embedding_index import CANDIDATES_PER_NEIGHBOUR, TRAINING_SAMPLE
    from dedup_assets.vision.search import coded_neighbours, encode, train_codec

    rng = np.random.default_rng(0)
    sample = stored[rng.choice(len(stored), min(len(stored), TRAINING_SAMPLE), replace=False)].astype(np.float32)
    started = time.perf_counter()
    codec = train_codec(sample, spec)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    codes = np.concatenate([encode(codec, stored[i:i + 10_000].astype(np.float32))
                            for i in range(0, len(stored), 10_000)])
    encoded = time.perf_counter() - started
    started = time.perf_counter()
    _, candidates = coded_neighbours(codec, [codes], queries, CANDIDATES_PER_NEIGHBOUR * K, probes)
    searched = time.perf_counter() - started
    found = np.zeros(len(queries), bool)
    for q, row in enumerate(candidates):
        row = row[row >= 0]
        cosine = stored[row].astype(np.float32) @ queries[q]
        order = np.argsort(-cosine, kind="stable")[:K]
        kept = row[order][cosine[order] >= FLOOR]
        found[q] = originals[q] in set(kept)
    return found, {"bytes": codes.shape[1], "train_s": trained, "encode_s": encoded, "search_s": searched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=50_000)
    parser.add_argument("--copies", type=int, default=800)
    parser.add_argument("--specs", default="IVF1024,PQ64;PCA256,IVF1024,PQ64;IVF1024,PQ80",
                        help='faiss factory specs separated by ";" (the pipeline\'s default first)')
    parser.add_argument("--probes", type=int, default=128)
    args = parser.parse_args()
    apply_defaults()
    from memory_scale import images_for

    from dedup_assets.embedding_stage import cached_embedder

    folder = images_for(args.stored, side=640)
    embedder = cached_embedder("efficientnet_lite0", None, "auto", "auto", None)
    stored = stored_embeddings(embedder, folder, args.stored)
    datas, originals, kinds = edited_copies(folder, args.copies, args.stored)
    queries = embed_files(embedder, datas).astype(np.float32)
    print(f"{len(stored)} stored embeddings ({embedder.name}), {len(queries)} edited copies as queries\n")

    exact = found_exact(queries, stored, originals)
    results = {"exact (float16, every stored vector)": (exact, {"bytes": 2 * stored.shape[1]})}
    for spec in args.specs.split(";"):
        results[spec] = found_indexed(queries, stored, originals, spec, args.probes)
    order = sorted(set(kinds), key=kinds.index)
    kinds = np.array(kinds)
    print(f"{'search':<40}{'B/image':>8}{'found':>7}{'of exact':>9}  " + "  ".join(f"{k[:12]:>12}" for k in order))
    for name, (found, info) in results.items():
        per_kind = "  ".join(f"{found[kinds == k].mean():12.2f}" for k in order)
        print(f"{name:<40}{info['bytes']:>8}{found.sum():>7}{(found & exact).sum() / max(exact.sum(), 1):9.3f}  {per_kind}")
    for name, (_, info) in results.items():
        if "train_s" in info:
            print(f"{name}: trained in {info['train_s']:.1f} s, {len(stored)} encoded in {info['encode_s']:.1f} s, "
                  f"{len(queries)} queries in {info['search_s']:.2f} s")
    print("found by the exact search and missed by each index, by edit:")
    for name, (found, info) in results.items():
        if "train_s" in info:  # the indexes
            print(f"  {name}: {dict(Counter(str(kind) for kind in kinds[exact & ~found]))}")


if __name__ == "__main__":
    main()
