"""Compact colour signature: mean CIELAB colour on a 4×4 grid (48 bytes)."""

from __future__ import annotations

import cv2
import numpy as np

GRID = 4
SIGNATURE_SIZE = GRID * GRID * 3


def color_signature(rgb: np.ndarray) -> np.ndarray:
    grid = cv2.resize(rgb, (GRID, GRID), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(grid, cv2.COLOR_RGB2LAB).reshape(-1)


def color_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute Lab difference per cell (0 = same colours; vectorised over rows)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)
