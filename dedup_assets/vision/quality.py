"""Image quality facts: sharpness now, the ranking score with the clusters stage."""

from __future__ import annotations

import cv2
import numpy as np


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: higher means more fine detail (less blur)."""
    _, deviation = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))
    return float(deviation[0, 0] ** 2)
