"""Thumbnail decode time per file format: the hash stage's decoder beside Pillow decoding
the whole picture and then shrinking it (the baseline), in the same run, on one core.

    .venv/bin/python bench/decode_formats.py [--count 20] [--side 4800]

The same photographs (the shipped ones, resized to `--side` pixels wide) as a baseline
JPEG, a progressive JPEG (web exports), a lossy and a lossless JPEG 2000 (scanned
archives) and a PNG.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
from PIL import Image  # noqa: E402

from dedup_assets.demo_data import shipped_photos  # noqa: E402
from dedup_assets.vision.decode import THUMBNAIL_SIDE, decode_thumbnail  # noqa: E402

FORMATS = {
    "JPEG, quality 90": ("JPEG", {"quality": 90}),
    "JPEG, progressive": ("JPEG", {"quality": 90, "progressive": True}),
    "JPEG 2000, lossy (20:1)": ("JPEG2000", {"quality_mode": "rates", "quality_layers": [20], "irreversible": True}),
    "JPEG 2000, lossless": ("JPEG2000", {}),
    "PNG": ("PNG", {"compress_level": 1}),
}


def whole_then_shrunk(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        return image.size


def median_ms(files: list[bytes], decode) -> float:
    times = []
    for data in files:
        started = time.perf_counter()
        decode(data)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--side", type=int, default=4800)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, as each hash worker
    photos = list(shipped_photos().values())[:args.count]
    pictures = [p.resize((args.side, round(args.side * p.height / p.width)), Image.Resampling.BILINEAR)
                for p in photos]
    print(f"{len(pictures)} photographs {args.side} px wide, median ms per file, one core\n")
    print(f"{'format':<26} {'MB':>6} {'dedup_assets':>13} {'whole, shrunk':>14} {'speed-up':>9}")
    for label, (fmt, options) in FORMATS.items():
        files = []
        for picture in pictures:
            buffer = io.BytesIO()
            picture.save(buffer, fmt, **options)
            files.append(buffer.getvalue())
        ours = median_ms(files, decode_thumbnail)
        baseline = median_ms(files, whole_then_shrunk)
        size = statistics.median(len(f) for f in files) / 2**20
        print(f"{label:<26} {size:6.1f} {ours:10.1f} ms {baseline:11.1f} ms {baseline / ours:8.1f}x")


if __name__ == "__main__":
    main()
