"""Image quality facts: sharpness now, the ranking score with the clusters stage."""

from __future__ import annotations

import cv2
import numpy as np


TILES = 4


def sharpness(gray: np.ndarray) -> float:
    """Median over a 4×4 grid of tiles of the Laplacian's variance: higher means more
    fine detail (less blur). The median ignores a few tiles of overlaid text or logos,
    which would otherwise make an edited copy look sharper than its original."""
    laplacian = cv2.Laplacian(gray, cv2.CV_32F)
    height, width = (laplacian.shape[0] // TILES) * TILES, (laplacian.shape[1] // TILES) * TILES
    if height == 0 or width == 0:
        return float(laplacian.var())
    tiles = laplacian[:height, :width].reshape(TILES, height // TILES, TILES, width // TILES)
    return float(np.median(tiles.var(axis=(1, 3))))
