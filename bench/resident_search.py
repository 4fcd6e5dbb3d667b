"""The exact search across batches in a process that runs batch after batch: every
stored embedding read from Parquet by each batch (`verified_pairs.resident_embeddings_mb:
0`, the baseline, as before), against the stored partitions held decoded between batches
(`corpus.ResidentEmbeddings`, the default 256 MB and a budget holding the whole corpus),
in the same run.

    .venv/bin/python bench/resident_search.py [--stored 100000] [--batches 3] [--budgets 0,256,1024]

The stored corpus is `bench/incremental.py`'s synthetic one (1,000-image partitions of
float16 embeddings of 1,280 dimensions, written once under $DEDUP_HOME/bench). Each
budget runs in a fresh process: `--batches` new batches of 1,000 embeddings (100 of them
copies of stored ones), each stored as its own partition and then searched against
everything stored (`embedding_index.cross_batch_pairs`, exact), as `dedup run` does batch
after batch. The first batch of every budget reads every partition; what differs is the
batches after it. The pairs found must be the same for every budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import polars as pl

from dedup_assets.settings import apply_defaults


def one_budget(corpus: str, budget_mb: int, batches: int) -> dict:
    from index_scale import rss_mb  # bench/ is this script's folder: on the path

    from dedup_assets.corpus import embeddings_matrix, resident_embeddings
    from dedup_assets.embedding_index import cross_batch_pairs
    from dedup_assets.storage import StorageLayout

    rng = np.random.default_rng(11)
    seconds, reads, found = [], [], []
    with tempfile.TemporaryDirectory() as home:
        shutil.copytree(corpus, home, dirs_exist_ok=True, copy_function=os.link)
        layout = StorageLayout(home)
        stored = embeddings_matrix(pl.read_parquet(layout.glob(f"{layout.asset_dir('embeddings')}/*.parquet")[0]))
        started_rss = rss_mb()
        for number in range(batches):
            key = f"zz-new-{number:06d}"  # after the stored ones: the newest partition is searched last
            vectors = rng.normal(size=(1000, 1280)).astype(np.float32)
            vectors[:100] = stored[rng.choice(len(stored), 100, replace=False)] + 0.01 * vectors[:100]  # copies
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            batch = pl.DataFrame({"blob_name": [f"{key}/{i}.jpg" for i in range(1000)],
                                  "model": ["efficientnet_lite0"] * 1000,
                                  "embedding": [v.astype("<f2").tobytes() for v in vectors]})
            layout.write_parquet(batch, layout.partition_path("embeddings", key))
            started = time.perf_counter()
            pairs, how = cross_batch_pairs(batch, layout, key, 0.5, 32, index_from=0, resident_bytes=budget_mb * 2**20)
            seconds.append(time.perf_counter() - started)
            reads.append(resident_embeddings.last_reads)
            found.append(pairs.height)
        return {"budget_mb": budget_mb, "seconds": seconds, "reads": reads, "pairs": found,
                "held_mb": resident_embeddings.held_bytes / 2**20, "rss_growth_mb": rss_mb() - started_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--budgets", default="0,256,1024", help="resident_embeddings_mb values, comma-separated")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one budget, JSON out
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    apply_defaults()
    if args.one is not None:
        print(json.dumps(one_budget(args.corpus, args.one, args.batches)))
        return
    from incremental import stored_corpus

    corpus = stored_corpus(args.stored)
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(budget), "--corpus", str(corpus),
                               "--batches", str(args.batches)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"budget {budget} MB: " + ", ".join(f"{s:.2f} s" for s in rows[-1]["seconds"]), flush=True)
    print(f"\n{args.stored:,} stored embeddings, then {args.batches} batches of 1,000 in one process "
          f"(exact search, {os.cpu_count()} cores)")
    print(f"{'resident_embeddings_mb':>24}{'first batch s':>15}{'later batches s':>17}{'× baseline':>12}"
          f"{'partitions read (later)':>25}{'held MB':>9}{'RSS growth MB':>15}{'pairs':>8}")
    baseline = np.mean(rows[0]["seconds"][1:]) if args.batches > 1 else rows[0]["seconds"][0]
    for row in rows:
        later = np.mean(row["seconds"][1:]) if args.batches > 1 else float("nan")
        print(f"{row['budget_mb']:>24}{row['seconds'][0]:>15.2f}{later:>17.2f}{later / baseline:>12.2f}"
              f"{np.mean(row['reads'][1:]) if args.batches > 1 else float('nan'):>25.0f}{row['held_mb']:>9.0f}"
              f"{row['rss_growth_mb']:>15.0f}{sum(row['pairs']):>8}")
    if len({sum(row["pairs"]) for row in rows}) > 1:
        print("PAIRS DIFFER between budgets")


if __name__ == "__main__":
    main()
