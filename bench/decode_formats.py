"""Thumbnail decode time per file format: the hash stage's decoder beside Pillow decoding
the whole picture and then shrinking it (the baseline), in the same run, on one core.

    .venv/bin/python bench/decode_formats.py [--count 20] [--side 4800]

The same photographs (the shipped ones, resized to `--side` pixels wide) as a baseline
JPEG, a progressive JPEG (web exports), a lossy and a lossless JPEG 2000 (scanned
archives), a PNG, a camera's JPEG with a preview after it (Pillow's "MPO"), a DNG with
the camera's preview and one without (the baseline: LibRaw's whole rendering, shrunk), and
a 40-frame GIF fading in from black (its first frame is blank: the frames are examined).
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

from dedup_assets.demo_data import camera_dng, shipped_photos  # noqa: E402
from dedup_assets.vision.decode import THUMBNAIL_SIDE, decode_thumbnail  # noqa: E402

def _saved(fmt: str, **options):
    def save(picture: Image.Image) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        return buffer.getvalue()
    return save


def _with_preview(picture: Image.Image) -> bytes:
    return _saved("MPO", quality=90, save_all=True, append_images=[picture.resize((1600, 1200))])(picture)


def _fading_in(picture: Image.Image) -> bytes:
    small = picture.resize((480, round(480 * picture.height / picture.width)))
    frames = [Image.eval(small, lambda value, step=step: value * step // 20) for step in range(20)] + [small] * 20
    return _saved("GIF", save_all=True, append_images=frames[1:], duration=50)(frames[0])


def rendered_then_shrunk(data: bytes) -> tuple[int, int]:
    import rawpy

    with rawpy.imread(io.BytesIO(data)) as raw:
        image = Image.fromarray(raw.postprocess(use_camera_wb=True, output_bps=8))
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return image.size


# label: how each picture is saved, and the baseline decode
FORMATS = {
    "JPEG, quality 90": (_saved("JPEG", quality=90), None),
    "JPEG, progressive": (_saved("JPEG", quality=90, progressive=True), None),
    "JPEG 2000, lossy (20:1)": (_saved("JPEG2000", quality_mode="rates", quality_layers=[20], irreversible=True), None),
    "JPEG 2000, lossless": (_saved("JPEG2000"), None),
    "PNG": (_saved("PNG", compress_level=1), None),
    "JPEG with a preview (MPO)": (_with_preview, None),
    "DNG, camera's preview": (lambda picture: camera_dng(picture, "jpeg"), rendered_then_shrunk),
    "DNG, no preview": (lambda picture: camera_dng(picture, None), rendered_then_shrunk),
    "GIF fading in, 480 px": (_fading_in, None),
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
    for label, (save, baseline_decode) in FORMATS.items():
        files = [save(picture) for picture in pictures]
        ours = median_ms(files, decode_thumbnail)
        baseline = median_ms(files, baseline_decode or whole_then_shrunk)
        size = statistics.median(len(f) for f in files) / 2**20
        print(f"{label:<26} {size:6.1f} {ours:10.1f} ms {baseline:11.1f} ms {baseline / ours:8.1f}x")


if __name__ == "__main__":
    main()
