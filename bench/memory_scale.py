"""Peak memory as the number of processed images grows: `dedup run` (batches of 1,000,
the whole cascade and the review) on 1k, 10k, 50k distinct images, each in a fresh
DEDUP_HOME and process, beside imagededup PHash (encode + find duplicates) on the same
folder in the same run.

    .venv/bin/python bench/memory_scale.py [--sizes 1000,10000,50000] [--side 640]

Images are distinct synthetic JPEGs (`build_distinct_set`; 640 px by default so that
50k of them can be generated in minutes: memory per batch does not depend on the
originals' size, which are decoded at thumbnail size). Peak RSS is the largest single
process of the run (`wait4`'s ru_maxrss), the figure the 1.5 GB target is about.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASH = """
import resource, sys, time
from imagededup.methods import PHash
started = time.perf_counter()
hasher = PHash(verbose=False)
hasher.find_duplicates(encoding_map=hasher.encode_images(image_dir=sys.argv[1]), max_distance_threshold=10)
print(time.perf_counter() - started)
"""


def measured(command: list[str], env: dict) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) of the largest process, and stdout of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {output[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, output


def images_for(size: int, side: int) -> Path:
    from dedup_assets.demo_data import build_distinct_set

    folder = Path(os.environ["DEDUP_HOME"]) / "bench" / f"distinct_{side}px_{size}"
    have = len(list(folder.glob("*.jpg"))) if folder.exists() else 0
    if have < size:
        print(f"generating {size - have} images in {folder} ...", flush=True)
        build_distinct_set(folder, size - have, side=side, seed=53, start=have)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--side", type=int, default=640)
    args = parser.parse_args()
    from dedup_assets.settings import apply_defaults

    apply_defaults()
    dedup = str(Path(sys.executable).with_name("dedup"))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        images = images_for(size, args.side)
        with tempfile.TemporaryDirectory(prefix="dedup-memory-") as home:
            env = {**os.environ, "DEDUP_HOME": home, "DEDUP_SOURCE": str(images), "DEDUP_BATCH_SIZE": "1000",
                   "DAGSTER_HOME": str(Path(home) / "dagster"),
                   "DEDUP_MODEL_CACHE": str(Path(os.environ["DEDUP_HOME"]) / "models")}
            ours_s, ours_mb, _ = measured([dedup, "run", "--no-progress"], env)
        phash_s, phash_mb, _ = measured([sys.executable, "-c", PHASH, str(images)], dict(os.environ))
        rows.append((size, ours_s, ours_mb, phash_s, phash_mb))
        print(f"{size:>7} images: dedup run {ours_s:.0f} s, peak RSS {ours_mb:.0f} MB; "
              f"PHash {phash_s:.0f} s, {phash_mb:.0f} MB", flush=True)
    print(f"\n{'images':>8}{'dedup run s':>13}{'images/s':>10}{'peak RSS MB':>13}   "
          f"{'PHash s':>8}{'PHash RSS MB':>14}")
    for size, ours_s, ours_mb, phash_s, phash_mb in rows:
        print(f"{size:>8}{ours_s:>13.0f}{size / ours_s:>10.1f}{ours_mb:>13.0f}   {phash_s:>8.0f}{phash_mb:>14.0f}")


if __name__ == "__main__":
    main()
