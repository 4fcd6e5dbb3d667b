"""Uniform borders added around a picture: letterboxing, a photo padded to a square.

Such a copy holds the same picture inside bars of one colour. Matched whole, its extra
frame makes the original look like a crop of it (and the padded copy the "whole frame",
with more pixels); its hash and embedding shift with the bars. Found here, the bars are
cut away before anything is measured, so every later stage sees the picture.

Only bars on two opposite sides, of one colour and about the same width, count: a
photo's own flat sky or wall sits on one side, where cutting it would change the photo.
One of the two may carry an overlay set in the padding (a caption, a logo, a price): lines
of other colours, parted from the picture by a band of the bar's colour, where the
picture ends as far from the edge as the opposite bar says. The overlay is cut with its
bar: a shot captioned in its margin is its original's picture, and two products captioned
alike no longer share the caption.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

# Of luma (and of each channel in the first line and between the two bars), 0-255: JPEG
# ringing where a bar meets the picture, a re-encoded bar's noise.
BAR_TOLERANCE = 12
# Of each channel past the first line: a JPEG halves its colour's resolution and quantises
# it coarser, so colour rings a whole 16 px block into a bar. Judged by the same ±12, a
# 300 px copy's bars ended up to 4 % of the side short of its original's, and its
# picture looked up to 15 % larger, as though the original were a crop of it.
BAR_COLOUR_TOLERANCE = 40
# A line is part of a bar when this share of its pixels is within the tolerance (a few
# stray pixels of a ringing edge or a watermark's corner do not end it).
BAR_LINE_SHARE = 0.995
MIN_BAR = 0.02  # of the side: thinner lines are an edge's artefact, not padding
BAR_WIDTH_TOLERANCE = 0.01  # of the side, beside JPEG_BLOCK: how far two opposite bars may differ
# A JPEG's ringing spreads through the 16 px block (8×8 with chroma halved) where a bar
# meets the picture, so each bar may end up to a block early: in a small re-encoded copy
# two equal bars measure up to ~16 px apart.
JPEG_BLOCK = 16
MIN_PICTURE = 0.25  # of the side left between the bars, or nothing is cut


_LUMA = np.array([0.299, 0.587, 0.114])  # OpenCV's RGB to gray


class Box(NamedTuple):
    """The picture inside its bars, in pixel rows and columns: [top, bottom) × [left, right)."""

    top: int
    bottom: int
    left: int
    right: int


def picture_box(rgb: np.ndarray) -> Box:
    """Where the picture lies inside uniform bars on opposite sides (the whole image when
    there are none)."""
    height, width = rgb.shape[:2]
    top, bottom = _opposite_bars(rgb)
    left, right = _opposite_bars(rgb.transpose(1, 0, 2))
    # An overlay in one axis's bars crosses the other axis's bars too (a caption in the
    # bottom bar spans the left and right ones): those are judged beside the picture alone.
    if (top or bottom) and not (left or right):
        left, right = _opposite_bars(rgb[top:height - bottom].transpose(1, 0, 2))
    elif (left or right) and not (top or bottom):
        top, bottom = _opposite_bars(rgb[:, left:width - right])
    return Box(top, height - bottom, left, width - right)


def _opposite_bars(lines: np.ndarray) -> tuple[int, int]:
    """Widths of the bars at the first and last of `lines` (rows of an H×W×3 image),
    both 0 unless they are a pair; one of them may carry an overlay (`_bar_with_overlay`)."""
    size = lines.shape[0]
    first, first_colour = _bar(lines)
    last, last_colour = _bar(lines[::-1])
    if first < MIN_BAR * size and last < MIN_BAR * size:  # most photos stop here, after a line each side
        return 0, 0
    if not (first >= MIN_BAR * size and last >= MIN_BAR * size and _same_width(first, last, size)
            and np.abs(first_colour - last_colour).max() <= BAR_TOLERANCE):
        if first >= MIN_BAR * size and (found := _bar_with_overlay(lines[::-1], first_colour, first)):
            last = found
        elif last >= MIN_BAR * size and (found := _bar_with_overlay(lines, last_colour, last)):
            first = found
        else:
            return 0, 0
    if size - first - last < MIN_PICTURE * size:
        return 0, 0
    return first, last


def _same_width(first: int, last: int, size: int) -> bool:
    return abs(first - last) <= BAR_WIDTH_TOLERANCE * size + JPEG_BLOCK


def _bar_with_overlay(lines: np.ndarray, colour: np.ndarray, opposite: int) -> int:
    """The width of a bar at the first of `lines` that carries an overlay, 0 if there is
    none: the picture begins as far in as the `opposite` bar's width (within the width
    tolerance), after a band of at least `MIN_BAR` of the bar's `colour`; the lines
    between that band and the edge may hold anything, and do in half of them at most (a
    caption, not a second picture)."""
    size = lines.shape[0]
    band = max(1, round(MIN_BAR * size))
    tolerance = math.ceil(BAR_WIDTH_TOLERANCE * size) + JPEG_BLOCK
    of_bar = _lines_of(np.ascontiguousarray(lines[:opposite + tolerance + 1]), _BarColour.of(colour))
    for width in range(max(band, opposite - tolerance), len(of_bar)):
        if not of_bar[width] and of_bar[width - band:width].all() and _same_width(width, opposite, size):
            return width if np.count_nonzero(~of_bar[:width]) <= width // 2 else 0
    return 0


class _BarColour(NamedTuple):
    """What a line of a bar's colour must stay within (once per bar, not per block)."""

    luma_low: float
    luma_high: float
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, colour: np.ndarray) -> "_BarColour":
        luma = float(colour @ _LUMA)
        return cls(luma - BAR_TOLERANCE, luma + BAR_TOLERANCE,
                   np.clip(colour - BAR_COLOUR_TOLERANCE, 0, 255).astype(np.uint8),
                   np.clip(colour + BAR_COLOUR_TOLERANCE, 0, 255).astype(np.uint8))


def _lines_of(block: np.ndarray, colour: _BarColour) -> np.ndarray:
    """Which lines of `block` are of the bar's colour: their luma within `BAR_TOLERANCE`
    and each channel within `BAR_COLOUR_TOLERANCE`, all but a few stray pixels."""
    of_bar = cv2.inRange(cv2.cvtColor(block, cv2.COLOR_RGB2GRAY), colour.luma_low, colour.luma_high)
    return (of_bar & cv2.inRange(block, colour.low, colour.high)).mean(axis=1) >= 255 * BAR_LINE_SHARE


def _bar(lines: np.ndarray) -> tuple[int, np.ndarray]:
    """How many lines from the first are of the first line's colour, and that colour."""
    spread = lines[0, ::max(1, lines.shape[1] // 16)].astype(np.int16)  # a photo's first line differs at once
    if (spread.max(axis=0) - spread.min(axis=0)).max() > 2 * BAR_TOLERANCE:
        return 0, np.zeros(3)
    colour = np.array(cv2.mean(np.ascontiguousarray(lines[:1]))[:3])
    bounds = _BarColour.of(colour)
    count, step = 0, 1  # the first line alone: most photos end their "bar" there
    while count < lines.shape[0]:
        within = _lines_of(np.ascontiguousarray(lines[count:count + step]), bounds)
        if not within.all():
            return count + int(np.argmin(within)), colour
        count, step = count + len(within), min(2 * step + 6, 64)  # then more at a time: bars are dozens wide
    return count, colour
