"""Decode an image once, at thumbnail size, with the facts a quality ranking needs."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

THUMBNAIL_SIDE = 256
# Refuse images whose header declares more pixels than this before decoding them:
# a decompression bomb must not take the worker's memory.
MAX_PIXELS = 150_000_000

# libjpeg's standard luminance quantisation table (Annex K), for quality estimation.
_STANDARD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)


class DecodeError(ValueError):
    """The bytes are not an image this pipeline can use; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    thumbnail: np.ndarray  # H×W×3 uint8 RGB, longest side ≤ THUMBNAIL_SIDE, upright
    width: int  # original size, after EXIF orientation
    height: int
    format: str
    jpeg_quality: int | None  # estimated from the quantisation tables; None if not JPEG


def estimate_jpeg_quality(quantization: dict[int, list[int]] | None) -> int | None:
    """Inverse of libjpeg's quality scaling, from the luminance table.

    Uses the ratio of table sums, so it does not depend on the order (zig-zag or
    natural) in which the decoder reports coefficients.
    """
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    scale = 100.0 * float(np.sum(quantization[0])) / float(_STANDARD_LUMA.sum())
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(round(min(max(quality, 1.0), 100.0)))


def _target_size(width: int, height: int, side: int) -> tuple[int, int]:
    ratio = side / max(width, height)
    if ratio >= 1.0:
        return width, height
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def decode_thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> DecodedImage:
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise DecodeError(f"{error}; not decoded") from None
    except Exception as error:  # Pillow raises many types on malformed headers
        raise DecodeError(f"unreadable image header: {error}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DecodeError(
            f"declared size {width}x{height} exceeds the {MAX_PIXELS:,}-pixel limit "
            "(possible decompression bomb); not decoded"
        )
    image_format = image.format or "unknown"
    quality = estimate_jpeg_quality(getattr(image, "quantization", None)) if image_format == "JPEG" else None
    try:
        orientation = image.getexif().get(0x0112, 1)
        upright_w, upright_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if image_format == "JPEG":
            # DCT-domain downscale: decoding at 1/2, 1/4 or 1/8 is several times faster.
            draft_w, draft_h = _target_size(width, height, side)
            image.draft("RGB", (draft_w, draft_h))
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("RGB", "L"):
            image = _to_rgb(image)
        image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image)
    except DecodeError:
        raise
    except Exception as error:
        raise DecodeError(f"corrupt or truncated image data: {error}") from None
    return DecodedImage(pixels, upright_w, upright_h, image_format, quality)


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent images are composited on white, so a PNG logo and its JPEG copy match.
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        return Image.fromarray((array * (255.0 / peak)).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def load_rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
