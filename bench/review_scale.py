"""Peak memory of the keep/drop manifest as the corpus grows: the manifest streamed by
DuckDB to Parquet and CSV (`review.write_manifest`, what the asset does), beside the same
query materialised as one polars frame and written from it (how the manifest was built
before), each in a fresh process, over synthetic corpora of N inventoried blobs; then
`duplicate_actions`' dry run on that manifest, its drops read alone (what the asset
does) beside the whole manifest loaded (the asset's input before).

    .venv/bin/python bench/review_scale.py [--sizes 100000,1000000,3000000]

The corpus is what the manifest reads: `blob_inventory` and `clusters` partitions of
1,000 blobs each (names like `photos/2011/07/IMG_000123456.jpg`, 40 % of blobs in
duplicate groups), generated once under `$DEDUP_HOME/bench/review_<N>`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

STREAMED = """
import resource, sys
from pathlib import Path
from dedup_assets.review import write_manifest
from dedup_assets.storage import StorageLayout
manifest = write_manifest(StorageLayout(sys.argv[1]), Path(sys.argv[2]))
print(manifest.rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

IN_MEMORY = """
import resource, sys
from pathlib import Path
from dedup_assets.catalog import connect
from dedup_assets.review import _views, manifest_sql
from dedup_assets.storage import StorageLayout
con = connect(StorageLayout(sys.argv[1]))
con.execute("set enable_progress_bar = false")
frame = con.execute(manifest_sql(_views(con))).pl()
frame.write_parquet(Path(sys.argv[2]) / "keep_drop_manifest.parquet")
(Path(sys.argv[2]) / "keep_drop_manifest.csv").write_bytes(frame.write_csv().encode())
print(frame.height, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

# The duplicate_actions step on that manifest, dry run: its drops read alone (what the
# asset does) or the whole manifest loaded, as the asset's input was before.
ACTIONS = """
import resource, sys, tempfile
import polars as pl
from dedup_assets.actions import apply_actions, plan_drops
from dedup_assets.sources.local import LocalFolderSource
from dedup_assets.storage import StorageLayout
layout, manifest = StorageLayout(sys.argv[1]), sys.argv[1] + "/review/keep_drop_manifest.parquet"
if sys.argv[3] == "drops":
    drops = plan_drops(layout, manifest)
else:
    drops = layout.read_parquet(manifest).filter(pl.col("action") == "drop").sort("blob_name")
with tempfile.TemporaryDirectory() as images:
    actions, _ = apply_actions(LocalFolderSource(images), drops, "copy", True, images + "-quarantine")
print(actions.height, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

BATCH = 1000


def build_corpus(home: Path, blobs: int) -> None:
    """blob_inventory and clusters partitions of BATCH blobs each, and their catalog."""
    from dedup_assets.catalog import register_views
    from dedup_assets.storage import StorageLayout

    layout = StorageLayout(home)
    now = dt.datetime.now(dt.timezone.utc)
    rng = np.random.default_rng(7)
    for number in range(blobs // BATCH):
        batch = f"batch-{number + 1:06d}"
        ids = np.arange(number * BATCH, (number + 1) * BATCH)
        names = [f"photos/{2000 + i % 26}/{i % 12 + 1:02d}/IMG_{i:09d}.jpg" for i in ids]
        inventory = pl.DataFrame({
            "blob_name": names, "size": rng.integers(50_000, 5_000_000, BATCH), "etag": [f"0x8DC{i:012X}" for i in ids],
            "last_modified": [now] * BATCH, "content_md5": [None] * BATCH, "batch": [batch] * BATCH,
        }, schema_overrides={"content_md5": pl.String})
        group = np.where(rng.random(BATCH) < 0.4, ids // 3, -1 - ids)  # 40 % in groups of up to 3
        first: dict[int, str] = {}
        representative = [first.setdefault(int(g), name) for g, name in zip(group, names)]
        sizes = dict(zip(*np.unique(group, return_counts=True)))
        clusters = pl.DataFrame({
            "blob_name": names, "cluster_id": [f"{abs(int(g)):016x}" for g in group], "representative": representative,
            "is_representative": [r == n for r, n in zip(representative, names)],
            "cluster_size": [int(sizes[g]) for g in group], "quality_score": rng.random(BATCH),
            "reason": ["kept: best of 3 copies (quality 11.3: 1200x900, q 92)" if sizes[g] > 1 else "unique" for g in group],
            "computed_at": [now] * BATCH, "batch": [batch] * BATCH,
        }, schema_overrides={"cluster_size": pl.Int32, "quality_score": pl.Float32})
        for asset, frame in (("blob_inventory", inventory), ("clusters", clusters)):
            Path(layout.asset_dir(asset)).mkdir(parents=True, exist_ok=True)
            frame.write_parquet(layout.partition_path(asset, batch))
    Path(layout.batches_dir).mkdir(parents=True, exist_ok=True)
    pl.DataFrame(schema={"blob_name": pl.String, "deleted_at": pl.Datetime("us", "UTC")}).write_parquet(
        f"{layout.batches_dir}/tombstones.parquet")
    register_views(layout)


def measured(script: str, home: Path, *extra: str, out: str | None = None) -> tuple[int, float, float]:
    """Rows, seconds and peak RSS (MB) of one script's run in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="dedup-review-") as scratch:
        started = time.perf_counter()
        output = subprocess.run([sys.executable, "-c", script, str(home), out or scratch, *extra],
                                capture_output=True, text=True, check=True).stdout.splitlines()[-1].split()
        return int(output[0]), time.perf_counter() - started, float(output[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000,3000000")
    args = parser.parse_args()
    from dedup_assets.settings import apply_defaults

    apply_defaults()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        home = Path(os.environ["DEDUP_HOME"]) / "bench" / f"review_{size}"
        if not (home / "dedup.duckdb").exists():
            print(f"generating a corpus of {size} blobs in {home} ...", flush=True)
            build_corpus(home, size)
        streamed = measured(STREAMED, home, out=str(home / "review"))  # kept for the actions
        in_memory = measured(IN_MEMORY, home)
        assert streamed[0] == in_memory[0] == size, (streamed[0], in_memory[0], size)
        drops_alone = measured(ACTIONS, home, "drops")
        whole = measured(ACTIONS, home, "whole")
        assert drops_alone[0] == whole[0]
        rows.append((size, streamed, in_memory, drops_alone, whole))
        print(f"{size:>9} blobs: manifest streamed {streamed[1]:.1f} s, {streamed[2]:.0f} MB; "
              f"one frame {in_memory[1]:.1f} s, {in_memory[2]:.0f} MB; actions on {whole[0]:,} drops "
              f"(dry run): drops read alone {drops_alone[1]:.1f} s, {drops_alone[2]:.0f} MB; "
              f"whole manifest loaded {whole[1]:.1f} s, {whole[2]:.0f} MB", flush=True)
    print(f"\n{'':>9}{'manifest':^42}{'duplicate_actions, dry run':^42}")
    print(f"{'blobs':>9}{'streamed s':>12}{'peak MB':>9}{'one frame s':>12}{'peak MB':>9}"
          f"{'drops s':>12}{'peak MB':>9}{'whole s':>12}{'peak MB':>9}")
    for size, *measures in rows:
        print(f"{size:>9}" + "".join(f"{seconds:>12.1f}{peak:>9.0f}" for _, seconds, peak in measures))


if __name__ == "__main__":
    main()
