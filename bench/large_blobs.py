"""Peak memory of the hash stage over large blobs read from Azurite: image masters (TIFF)
with the download byte budget and, as the baseline in the same run, with it lifted (blobs
bounded by count alone, as before the budget); then large blobs that are not images
(videos) told from their first 64 KB, beside reading them whole (the baseline).

    .venv/bin/python bench/large_blobs.py [--blobs 40] [--side 4000] [--concurrency 16]
                                          [--videos 2] [--video-mb 1024]

Starts its own Azurite on disk (npm ci first), uploads `--blobs` uncompressed RGB TIFFs of
`--side` × 1.25 `--side` pixels (4000: 57 MB each) and `--videos` MP4s of `--video-mb`
MB, then hashes each set in a fresh process per setting and prints that process's peak
RSS beside its time.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dedup_assets_tests.azurite import Azurite  # noqa: E402


def upload_masters(container, count: int, side: int) -> int:
    noise = np.random.default_rng(1).integers(0, 255, (side, side * 5 // 4, 3), dtype=np.uint8)
    for number in range(count):
        buffer = io.BytesIO()
        Image.fromarray(np.roll(noise, number * 7, axis=1)).save(buffer, "TIFF")
        container.upload_blob(f"master_{number:03d}.tif", buffer.getvalue(), overwrite=True)
    return buffer.tell()


def upload_videos(container, count: int, megabytes: int) -> None:
    """MP4s in name: an `ftyp` header, then noise, staged 64 MB at a time."""
    from azure.storage.blob import BlobBlock

    header = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    noise = np.random.default_rng(2).bytes(64 * 2**20)
    for number in range(count):
        blob = container.get_blob_client(f"clip_{number:03d}.mp4")
        blocks = []
        for block in range(max(1, megabytes // 64)):
            blob.stage_block(f"{block:06d}", header + noise[len(header):] if block == 0 else noise)
            blocks.append(BlobBlock(block_id=f"{block:06d}"))
        blob.commit_block_list(blocks)


def measure(connection: str, home: str, concurrency: int, container: str, budget: int | None,
            head_first_above: int | None) -> dict:
    """In this (fresh) process: hash every blob of the container, report peak RSS."""
    from dedup_assets import hash_stage, hash_worker
    from dedup_assets.ledger import _to_frame
    from dedup_assets.sources.azure import AzureBlobSource, AzureSettings
    from dedup_assets.storage import StorageLayout

    if budget is not None:
        hash_stage.DOWNLOAD_BUDGET = budget
    if head_first_above is not None:
        hash_worker.READ_HEAD_FIRST_ABOVE = head_first_above
    source = AzureBlobSource(f"az://{container}", connection_string=connection,
                             settings=AzureSettings(concurrency=concurrency))
    inventory = _to_frame(source.iter_blobs())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = hash_stage.hash_blobs(source, inventory, StorageLayout(home), workers=2)
    return {"seconds": time.perf_counter() - started, "hashed": result.hashes.height,
            "failed": len(result.failures), "rss_before_mb": before / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_setting(connection: str, workdir: Path, concurrency: int, container: str, budget: int | None = None,
                head_first_above: int | None = None) -> dict:
    home = tempfile.mkdtemp(dir=workdir)
    command = [sys.executable, __file__, "--measure",
               json.dumps([connection, home, concurrency, container, budget, head_first_above])]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=40)
    parser.add_argument("--side", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--video-mb", type=int, default=1024)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*json.loads(args.measure))))
        return
    from dedup_assets.hash_stage import DOWNLOAD_BUDGET
    from dedup_assets.hash_worker import HEAD_BYTES

    with tempfile.TemporaryDirectory() as workdir:
        emulator = Azurite(Path(workdir) / "azurite", persistent=True).start()
        try:
            if args.blobs:
                size = upload_masters(emulator.container("masters"), args.blobs, args.side)
                print(f"{args.blobs} TIFF masters of {size / 2**20:.0f} MB, {args.concurrency} concurrent downloads, "
                      "2 decode workers\n")
                print(f"{'setting':<44} {'peak RSS':>10} {'before':>8} {'seconds':>8}")
                settings = [(f"byte budget {DOWNLOAD_BUDGET / 2**20:.0f} MB (dedup_assets)", None),
                            ("count only: 2 x concurrency (baseline)", 2**62)]
                for label, budget in settings:
                    figures = run_setting(emulator.connection_string, Path(workdir), args.concurrency, "masters",
                                          budget)
                    assert figures["hashed"] == args.blobs, figures
                    print(f"{label:<44} {figures['peak_rss_mb']:8.0f} MB {figures['rss_before_mb']:5.0f} MB "
                          f"{figures['seconds']:8.1f}")
            if args.videos:
                upload_videos(emulator.container("videos"), args.videos, args.video_mb)
                print(f"\n{args.videos} videos (MP4) of {args.video_mb:,} MB among the blobs\n")
                print(f"{'setting':<44} {'peak RSS':>10} {'before':>8} {'seconds':>8}")
                settings = [(f"told from the first {HEAD_BYTES // 1024} KB (dedup_assets)", None),
                            ("read whole, then refused (baseline)", 2**62)]
                for label, head_first_above in settings:
                    figures = run_setting(emulator.connection_string, Path(workdir), args.concurrency, "videos",
                                          head_first_above=head_first_above)
                    assert figures["failed"] == args.videos, figures
                    print(f"{label:<44} {figures['peak_rss_mb']:8.0f} MB {figures['rss_before_mb']:5.0f} MB "
                          f"{figures['seconds']:8.1f}")
        finally:
            emulator.stop()


if __name__ == "__main__":
    main()
