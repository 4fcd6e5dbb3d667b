"""Cost per batch as the corpus grows, on real look-alike images: one `dedup run` over N
distinct images in batches of B, with the verifier's features kept between batches
(`verified_pairs.keep_features`, the default) beside the same run without them
(every batch describes again each stored image its pairs reach), in one bench run.

    .venv/bin/python bench/corpus_growth.py [--images 3000] [--batch 200] [--side 640]

Unlike bench/incremental.py, whose synthetic stored features lie far from the new
batch, here every batch's embedding neighbours are stored images, as in a real corpus
of similar photos: each new image is paired with up to 32 of them. Per batch it prints
the verification seconds, the pairs verified and the distinct images they involve;
then the whole run's seconds and peak RSS (the `dedup run` process, `wait4`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from dedup_assets.settings import apply_defaults


def linked_images(count: int, side: int, scratch: Path) -> Path:
    """The first `count` distinct images (shared with bench/memory_scale.py), hard-linked
    into a folder of their own."""
    sys.path.insert(0, str(Path(__file__).parent))
    from memory_scale import images_for

    source = images_for(count, side)
    folder = scratch / "images"
    folder.mkdir()
    for path in sorted(source.glob("*.jpg"))[:count]:
        os.link(path, folder / path.name)
    return folder


def per_batch(home: Path) -> list[tuple[str, float, int, int]]:
    """(batch, verification seconds, pairs verified, distinct images in them) per batch."""
    import dagster as dg
    import polars as pl

    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    rows = []
    for record in instance.fetch_materializations(dg.AssetKey("verified_pairs"), limit=10_000).records:
        materialization = record.asset_materialization
        pairs = pl.read_parquet(home / "parquet" / "verified_pairs" / f"{materialization.partition}.parquet",
                                columns=["blob_a", "blob_b", "inliers"]).filter(pl.col("inliers").is_not_null())
        involved = pl.concat([pairs["blob_a"], pairs["blob_b"]]).n_unique()
        rows.append((materialization.partition, materialization.metadata["seconds"].value, pairs.height, involved))
    return sorted(rows)


def differing_decisions(home_a: Path, home_b: Path) -> tuple[int, int]:
    """Pairs in both runs, and those whose decision or inlier count differs."""
    import polars as pl

    keys, columns = ["blob_a", "blob_b"], ["blob_a", "blob_b", "is_duplicate", "inliers"]
    a = pl.read_parquet(home_a / "parquet" / "verified_pairs" / "*.parquet", columns=columns)
    b = pl.read_parquet(home_b / "parquet" / "verified_pairs" / "*.parquet", columns=columns)
    both = a.join(b, on=keys, suffix="_b")
    differ = both.filter((pl.col("is_duplicate") != pl.col("is_duplicate_b"))
                         | (pl.col("inliers").fill_null(-1) != pl.col("inliers_b").fill_null(-1)))
    return both.height, differ.height


def run(images: Path, batch: int, keep_features: bool, scratch: Path) -> tuple[float, float, list]:
    import time

    home = scratch / ("kept" if keep_features else "described_again")
    config = scratch / f"{home.name}.yaml"
    config.write_text(yaml.safe_dump({"ops": {"verified_pairs": {"config": {"keep_features": keep_features}}}}))
    env = {**os.environ, "DEDUP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "DEDUP_SOURCE": str(images), "DEDUP_BATCH_SIZE": str(batch),
           "DEDUP_MODEL_CACHE": str(Path(os.environ["DEDUP_HOME"]) / "models")}
    started = time.perf_counter()
    process = subprocess.Popen([str(Path(sys.executable).with_name("dedup")), "run", "--no-progress",
                                "--config", str(config)], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"dedup run failed (keep_features={keep_features})")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, per_batch(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--side", type=int, default=640)
    args = parser.parse_args()
    apply_defaults()
    with tempfile.TemporaryDirectory(prefix="dedup-growth-") as scratch:
        scratch = Path(scratch)
        images = linked_images(args.images, args.side, scratch)
        base_s, base_mb, base = run(images, args.batch, False, scratch)
        ours_s, ours_mb, ours = run(images, args.batch, True, scratch)
        compared, differing = differing_decisions(scratch / "described_again", scratch / "kept")
    print(f"\n{args.images} images in batches of {args.batch}; verified_pairs per batch")
    print(f"{'batch':>14} {'stored before':>13}   {'described again: s':>18} {'pairs':>6} {'images':>6}"
          f"   {'features kept: s':>16} {'pairs':>6} {'images':>6}")
    for number, (b, o) in enumerate(zip(base, ours)):
        print(f"{b[0]:>14} {number * args.batch:>13}   {b[1]:>18.1f} {b[2]:>6} {b[3]:>6}   {o[1]:>16.1f} {o[2]:>6} {o[3]:>6}")
    print(f"\n{'':>28}{'described again':>18}{'features kept':>16}")
    print(f"{'whole dedup run, s':>28}{base_s:>18.0f}{ours_s:>16.0f}")
    print(f"{'images/s':>28}{args.images / base_s:>18.1f}{args.images / ours_s:>16.1f}")
    print(f"{'verification, last batch s':>28}{base[-1][1]:>18.1f}{ours[-1][1]:>16.1f}")
    print(f"{'peak RSS MB':>28}{base_mb:>18.0f}{ours_mb:>16.0f}")
    print(f"\npairs compared: {compared}; decisions or inlier counts that differ: {differing}")


if __name__ == "__main__":
    main()
