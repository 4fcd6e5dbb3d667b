"""Image quality facts: sharpness now, the ranking score with the clusters stage."""

from __future__ import annotations

import cv2
import numpy as np


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: higher means more fine detail (less blur)."""
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())
