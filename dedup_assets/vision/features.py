"""Everything the hash stage learns from one image, from a single decode."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dedup_assets.vision.borders import find_picture
from dedup_assets.vision.color import color_signature
from dedup_assets.vision.decode import decode_thumbnail, encode_jpeg
from dedup_assets.vision.hashing import downsample, to_gray, wavelet_hash
from dedup_assets.vision.quality import sharpness


@dataclass(frozen=True)
class ImageFeatures:
    content_hash: str
    format: str
    width: int
    height: int
    # The picture inside uniform bars (letterboxing, padding to a square), in the file's
    # pixels; width and height when it has none. Everything below is measured on it.
    picture_width: int
    picture_height: int
    bytes: int
    jpeg_quality: int | None
    sharpness: float
    wavelet_hash: int
    color_signature: np.ndarray
    thumbnail_jpeg: bytes
    multi_picture: bool = False  # an animation or a document of pages: never a copy of one picture


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()  # hardware-accelerated on current CPUs


def extract_features(data: bytes) -> ImageFeatures:
    """Decode once at thumbnail size; raises `DecodeError` with a readable reason."""
    decoded = decode_thumbnail(data)
    box, pixels = find_picture(decoded.thumbnail)
    thumbnail = pixels[box.top:box.bottom, box.left:box.right]
    scale_y = decoded.height / decoded.thumbnail.shape[0]
    scale_x = decoded.width / decoded.thumbnail.shape[1]
    gray = to_gray(thumbnail)
    small = downsample(thumbnail)
    return ImageFeatures(
        content_hash=content_hash(data),
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        picture_width=min(decoded.width, round(thumbnail.shape[1] * scale_x)),
        picture_height=min(decoded.height, round(thumbnail.shape[0] * scale_y)),
        bytes=len(data),
        jpeg_quality=decoded.jpeg_quality,
        sharpness=sharpness(gray),
        wavelet_hash=wavelet_hash(to_gray(small)),
        color_signature=color_signature(small),
        thumbnail_jpeg=encode_jpeg(thumbnail),
        multi_picture=decoded.multi_picture,
    )
