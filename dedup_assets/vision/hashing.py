"""Wavelet perceptual hash (PyWavelets) and Hamming distances."""

from __future__ import annotations

import cv2
import numpy as np
import pywt

HASH_BITS = 64
# A median split sets 32 of the 64 bits (a cell equal to the median counts as below it):
# fewer means more than half the cells share one tone exactly, a product on white or a
# blank page, and the hash tells little of the layout (665 of 1,000 synthetic product
# shots on white hashed to 0). Photos of the labelled sets set 31 or 32.
MIN_INFORMATIVE_BITS = 24
_HASH_SIDE = 8
_INPUT_SIDE = 64  # 64 px → three Haar levels → an 8×8 approximation band


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def downsample(image: np.ndarray) -> np.ndarray:
    """The 64×64 area-averaged image that the hash and the colour signature share."""
    if image.shape[:2] == (_INPUT_SIDE, _INPUT_SIDE):
        return image
    if min(image.shape[:2]) > 2 * _INPUT_SIDE:
        # OpenCV's area filter is slow for non-integer ratios: a bilinear step to exactly
        # twice the size first makes the final area step a cheap 2×2 mean (~4× faster).
        image = cv2.resize(image, (2 * _INPUT_SIDE, 2 * _INPUT_SIDE), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (_INPUT_SIDE, _INPUT_SIDE), interpolation=cv2.INTER_AREA)


def wavelet_hash(gray: np.ndarray) -> int:
    """64-bit hash: signs of the Haar approximation band around its median.

    The image is brought to 64×64 first, so the hash ignores resolution; the lowest
    band keeps the coarse layout of light and dark that survives recompression, resizing
    and mild colour edits.
    """
    small = downsample(gray)
    level = int(np.log2(_INPUT_SIDE // _HASH_SIDE))
    approximation = pywt.wavedec2(small.astype(np.float32) / 255.0, "haar", level=level)[0]
    bits = (approximation > np.median(approximation)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def is_informative(hashes: np.ndarray) -> np.ndarray:
    """Whether each hash splits its cells nearly evenly, so that two near-identical
    hashes are evidence of one picture, not just of two flat backgrounds."""
    return np.bitwise_count(np.asarray(hashes, dtype=np.uint64)) >= MIN_INFORMATIVE_BITS


def hash_to_bytes(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes → (n, 8) uint8 rows, big-endian, for faiss binary indexes."""
    return np.ascontiguousarray(hashes.astype(">u8")).view(np.uint8).reshape(-1, 8)


def hamming(a: int, b: int) -> int:
    return int((a ^ b).bit_count())
