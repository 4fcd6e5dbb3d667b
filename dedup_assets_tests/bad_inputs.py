"""A corpus of awkward and broken files, generated on the fly (nothing binary in git)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from dedup_assets.demo_data import shipped_photos


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def build_bad_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus; return {file name: "ok" | "fail"} (what the pipeline must do)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = shipped_photos()["astronaut"]
    jpeg = _save(photo, "JPEG", quality=90)
    png = _save(photo, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [photo.resize((64, 64)).rotate(angle) for angle in (0, 10, 20)]
    palette = photo.resize((64, 64)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    heic = _save(photo.resize((400, 200)), "HEIF", quality=60, exif=exif.tobytes())  # a phone's, stored sideways
    sixteen_bit = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    files: dict[str, tuple[bytes, str]] = {
        "zero_bytes.jpg": (b"", "fail"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "fail"),
        "truncated.png": (png[: len(png) // 2], "fail"),
        "text_named.jpg": (b"just some notes, not an image\n" * 20, "fail"),
        "error_page.jpg": (b"<!DOCTYPE html><html><body><h1>403 Forbidden</h1></body></html>", "fail"),
        "bomb.png": (_png_claiming(100_000, 100_000), "fail"),
        "cmyk.jpg": (_save(photo.convert("CMYK"), "JPEG", quality=90), "ok"),
        "sixteen_bit.png": (_save(sixteen_bit, "PNG"), "ok"),
        "palette_transparent.png": (_save(palette, "PNG", transparency=0), "ok"),
        "animated.gif": (_save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0), "ok"),
        "animated.webp": (_save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100), "ok"),
        "exif_rotated.jpg": (_save(photo.resize((400, 200)), "JPEG", exif=exif.tobytes()), "ok"),
        "one_pixel.png": (_save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "ok"),
        "very_large.jpg": (_save(photo.resize((8000, 6000)), "JPEG", quality=85), "ok"),
        "rotated.heic": (heic, "ok"),
        "truncated.heic": (heic[: len(heic) // 2], "fail"),
        "heic_like.heic": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200, "fail"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: outcome for name, (_, outcome) in files.items()}
