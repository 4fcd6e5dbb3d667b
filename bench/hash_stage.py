"""Hash-stage throughput beside imagededup's PHash and the raw draft-decode ceiling.

    .venv/bin/python bench/hash_stage.py [--count 1000] [--side 1200] [--workers N]

All three run in this process on the same ~1200 px JPEGs (generated once under
$DEDUP_HOME/bench/jpegs_<side>), each over every core.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from dedup_assets.settings import apply_defaults


def draft_decode(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.draft("RGB", (256, 192))
        image.load()
        return image.size


def timed(label: str, count: int, fn, repeats: int) -> float:
    """Median images/s over `repeats` runs (this machine is shared and noisy)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - started))
    rate = statistics.median(rates)
    spread = ", ".join(f"{r:.0f}" for r in rates)
    print(f"{label:<40} {rate:8.1f} images/s   (runs: {spread})")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--side", type=int, default=1200)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    apply_defaults()
    # Imported here, not at the top: the stage's worker processes import this script again
    # (multiprocessing's forkserver), and under `dedup run` they import only its light CLI
    # module; Polars here cost each of them ~0.1 s.
    from dedup_assets.demo_data import build_bench_set
    from dedup_assets.hash_stage import hash_blobs
    from dedup_assets.ledger import _to_frame
    from dedup_assets.sources.local import LocalFolderSource
    from dedup_assets.storage import StorageLayout

    folder = Path(os.environ["DEDUP_HOME"]) / "bench" / f"jpegs_{args.side}"
    if len(list(folder.glob("*.jpg"))) != args.count:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {args.count} JPEGs of {args.side} px in {folder} ...")
        build_bench_set(folder, count=args.count, side=args.side)
    files = sorted(folder.glob("*.jpg"))
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    print(f"{len(files)} JPEGs, {megabytes:.0f} MB, {args.workers} workers, {os.cpu_count()} cores\n")

    for path in files:  # warm the page cache so every contender reads from memory
        path.read_bytes()

    with ThreadPoolExecutor(args.workers) as pool:
        ceiling = timed("Pillow draft decode only (ceiling)", len(files), lambda: list(pool.map(draft_decode, files)), args.repeats)

    source = LocalFolderSource(folder)
    inventory = _to_frame(source.iter_blobs())

    def run_hash_stage() -> None:
        with tempfile.TemporaryDirectory() as scratch:  # fresh: every thumbnail is written
            result = hash_blobs(source, inventory, StorageLayout(scratch), workers=args.workers)
        assert not result.failures and result.hashes.height == len(files)

    ours = timed("dedup_assets wavelet_hashes stage", len(files), run_hash_stage, args.repeats)

    from imagededup.methods import PHash

    phasher = PHash(verbose=False)
    theirs = timed("imagededup PHash.encode_images", len(files),
                   lambda: phasher.encode_images(image_dir=str(folder), num_enc_workers=args.workers),
                   args.repeats)

    print("\n(the hash stage also hashes the bytes, keeps a thumbnail and measures quality;"
          " pool start-up is included)")
    print(f"ours / imagededup PHash: {ours / theirs:.2f}x   ours / draft-decode ceiling: {ours / ceiling:.0%}")


if __name__ == "__main__":
    main()
