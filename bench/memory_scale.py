"""Peak memory as the number of processed images grows: `dedup run` (batches of 1,000,
the whole cascade and the review) on 1k, 10k, 50k distinct images, each in a fresh
DEDUP_HOME and process, beside imagededup PHash (encode + find duplicates) on the same
folder in the same run.

    .venv/bin/python bench/memory_scale.py [--sizes 1000,10000,50000] [--side 640]

The run also prints each batch's own peak (the kernel's count restarted before each
batch) and its RSS after: flat memory means flat peaks batch after batch, which one
number for the whole run cannot show.

Images are distinct synthetic JPEGs (`build_distinct_set`; 640 px by default so that
50k of them can be generated in minutes: memory per batch does not depend on the
originals' size, which are decoded at thumbnail size). Peak RSS is the largest single
process of the run (`wait4`'s ru_maxrss, or the largest batch peak: restarting the
count restarts the process's), the figure the 1.5 GB target is about.
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


DEDUP_RUN_TRACED = """
import sys, time
from pathlib import Path
import dagster as dg
from dedup_assets.cli import main

def status_mb(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1]) / 1024

execute = dg.JobDefinition.execute_in_process

def traced(job, *args, **kwargs):
    try:
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak count: this batch's own
    except OSError:
        pass
    started = time.perf_counter()
    result = execute(job, *args, **kwargs)
    print(f"batch {kwargs.get('partition_key', job.name)} {time.perf_counter() - started:.1f} "
          f"{status_mb('VmHWM:'):.0f} {status_mb('VmRSS:'):.0f}", flush=True)
    return result

dg.JobDefinition.execute_in_process = traced
if __name__ == "__main__":  # the hash stage's worker processes import this module again
    sys.exit(main(["run", "--no-progress"]))
"""


def batch_lines(output: str) -> list[tuple[str, float, float, float]]:
    """(batch, seconds, own peak MB, RSS after MB) printed by DEDUP_RUN_TRACED."""
    rows = []
    for line in output.splitlines():
        if line.startswith("batch "):
            _, key, seconds, peak, after = line.split()
            rows.append((key, float(seconds), float(peak), float(after)))
    return rows


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
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        images = images_for(size, args.side)
        with tempfile.TemporaryDirectory(prefix="dedup-memory-") as home:
            env = {**os.environ, "DEDUP_HOME": home, "DEDUP_SOURCE": str(images), "DEDUP_BATCH_SIZE": "1000",
                   "DAGSTER_HOME": str(Path(home) / "dagster"),
                   "DEDUP_MODEL_CACHE": str(Path(os.environ["DEDUP_HOME"]) / "models")}
            ours_s, ours_mb, output = measured([sys.executable, "-c", DEDUP_RUN_TRACED], env)
        batches = batch_lines(output)
        # Restarting the count per batch restarts the process's too (getrusage reads it).
        ours_mb = max([ours_mb, *(peak for _, _, peak, _ in batches)])
        print(f"{size:>7} images, each batch: seconds / own peak MB / RSS after MB", flush=True)
        for key, seconds, peak, after in batches:
            print(f"    {key:<14}{seconds:>7.1f}{peak:>7.0f}{after:>7.0f}", flush=True)
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
