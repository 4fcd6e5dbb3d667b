"""Compact colour signature: mean CIELAB colour on a 4×4 grid (48 bytes)."""

from __future__ import annotations

import cv2
import numpy as np

GRID = 4
SIGNATURE_SIZE = GRID * GRID * 3
# Chroma (distance from neutral in the a*b* plane, 8-bit CIELAB units) from which a cell
# of a signature has colour. A grayscale copy's cells are at 0 exactly (saved as PNG,
# grayscale JPEG or RGB JPEG alike); a cell averages its colours, so a colour photo of
# mostly dark sky (the Hubble deep field) has cells of only 2.2–4, still above.
COLOURLESS_CHROMA = 2.0


def color_signature(rgb: np.ndarray) -> np.ndarray:
    """48 bytes: the 8-bit CIELAB colour of each cell of a 4×4 grid."""
    height, width = rgb.shape[:2]
    if height % GRID or width % GRID:
        grid = cv2.resize(rgb, (GRID, GRID), interpolation=cv2.INTER_AREA)
    else:  # block means by reshaping: much cheaper than a resize call on small inputs
        blocks = rgb.reshape(GRID, height // GRID, GRID, width // GRID, 3)
        grid = np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)
    return cv2.cvtColor(grid, cv2.COLOR_RGB2LAB).reshape(-1)


def color_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute Lab difference per cell (0 = same colours; vectorised over rows)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)


def has_colour(signatures: np.ndarray) -> np.ndarray:
    """(n, 48) signatures → whether each image has colour in any cell (a grayscale copy
    of a colour photo has none)."""
    cells = np.asarray(signatures, dtype=np.float32).reshape(-1, GRID * GRID, 3)
    # OpenCV's 8-bit CIELAB stores a* and b* offset by 128.
    chroma = np.hypot(cells[:, :, 1] - 128.0, cells[:, :, 2] - 128.0)
    return chroma.max(axis=1) >= COLOURLESS_CHROMA
