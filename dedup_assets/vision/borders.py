"""Uniform borders added around a picture: letterboxing, a photo padded to a square.

Such a copy holds the same picture inside bars of one colour. Matched whole, its extra
frame makes the original look like a crop of it (and the padded copy the "whole frame",
with more pixels); its hash and embedding shift with the bars. Found here, the bars are
cut away before anything is measured, so every later stage sees the picture.

Only bars on two opposite sides, of one colour and about the same width, count: a
photo's own flat sky or wall sits on one side, where cutting it would change the photo.

An overlay set in the padding (a caption, a logo, a price, subtitles in a letterbox)
breaks the bars it crosses: the captioned copy was not cut where its original was, the
two were never compared, and every product captioned alike matched the others by the
caption. Where the picture is one blob, such marks apart from it are painted over with
the padding's colour, if that lets bars be cut (`find_picture`).
"""

from __future__ import annotations

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
# An overlay: marks on the padding apart from the picture, whose box is that of its parts
# of at least this share of its largest (a shoe of a pair, not a letter of a caption) and
# of whatever touches that box ...
PICTURE_PART = 0.25
# ... and at most this share of all that is not padding: a page of text, or two photos
# side by side, is not a picture and its caption.
MAX_OVERLAY = 0.2


_LUMA = np.array([0.299, 0.587, 0.114])  # OpenCV's RGB to gray


class Box(NamedTuple):
    """The picture inside its bars, in pixel rows and columns: [top, bottom) × [left, right)."""

    top: int
    bottom: int
    left: int
    right: int


class Picture(NamedTuple):
    box: Box
    pixels: np.ndarray  # the image, any overlay on its padding painted over


def find_picture(rgb: np.ndarray) -> Picture:
    """The picture inside uniform bars (`picture_box`), once any overlay on the padding
    is painted over with the padding's colour: only if that lets an axis be cut that
    was not (a bar already found keeps its width: a re-encoded bar's specks painted over
    would move it a pixel)."""
    box = picture_box(rgb)
    height, width = rgb.shape[:2]
    rows_cut, columns_cut = box.top > 0 or box.bottom < height, box.left > 0 or box.right < width
    if rows_cut and columns_cut:
        return Picture(box, rgb)  # nothing on the padding got in the way
    colour = _padding_colour(rgb)
    cleaned = _without_overlays(rgb, colour) if colour is not None else None
    if cleaned is not None:
        found = picture_box(cleaned)
        if (not rows_cut and (found.top > 0 or found.bottom < height)) or (
                not columns_cut and (found.left > 0 or found.right < width)):
            rows = (box.top, box.bottom) if rows_cut else (found.top, found.bottom)
            columns = (box.left, box.right) if columns_cut else (found.left, found.right)
            return Picture(Box(*rows, *columns), cleaned)
    return Picture(box, rgb)


def picture_box(rgb: np.ndarray) -> Box:
    """Where the picture lies inside uniform bars on opposite sides (the whole image when
    there are none)."""
    height, width = rgb.shape[:2]
    top, bottom = _opposite_bars(rgb)
    left, right = _opposite_bars(rgb.transpose(1, 0, 2))
    return Box(top, height - bottom, left, width - right)


def _opposite_bars(lines: np.ndarray) -> tuple[int, int]:
    """Widths of the bars at the first and last of `lines` (rows of an H×W×3 image),
    both 0 unless they are a pair."""
    size = lines.shape[0]
    first, first_colour = _bar(lines)
    if first < MIN_BAR * size:  # most photos stop here, after one line
        return 0, 0
    last, last_colour = _bar(lines[::-1])
    if (last < MIN_BAR * size or abs(first - last) > BAR_WIDTH_TOLERANCE * size + JPEG_BLOCK
            or np.abs(first_colour - last_colour).max() > BAR_TOLERANCE
            or size - first - last < MIN_PICTURE * size):
        return 0, 0
    return first, last


def _padding_colour(rgb: np.ndarray) -> np.ndarray | None:
    """The colour of two opposite edges, if both are of one (a caption may reach a third)."""
    for lines in (rgb, rgb.transpose(1, 0, 2)):
        first, first_colour = _bar(lines, most=1)
        last, last_colour = _bar(lines[::-1], most=1)
        if first and last and np.abs(first_colour - last_colour).max() <= BAR_TOLERANCE:
            return (first_colour + last_colour) / 2
    return None


def _without_overlays(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
    """The image with marks apart from the picture painted `colour`, or None when there
    are none, or the picture is not one blob holding most of what is not padding."""
    marks = cv2.bitwise_not(_of_colour(rgb, _BarColour.of(colour)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(marks, connectivity=8)
    if count < 3:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[1:, cv2.CC_STAT_WIDTH], top + stats[1:, cv2.CC_STAT_HEIGHT]
    parts = areas >= PICTURE_PART * areas.max()
    x0, y0, x1, y1 = left[parts].min(), top[parts].min(), right[parts].max(), bottom[parts].max()
    apart = (right <= x0) | (left >= x1) | (bottom <= y0) | (top >= y1)
    if not apart.any() or areas[apart].sum() > MAX_OVERLAY * areas.sum():
        return None
    cleaned = rgb.copy()
    cleaned[np.isin(labels, 1 + np.flatnonzero(apart))] = np.round(colour).astype(np.uint8)
    return cleaned


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


def _of_colour(pixels: np.ndarray, colour: _BarColour) -> np.ndarray:
    """255 where a pixel is of the bar's colour: its luma within `BAR_TOLERANCE` and each
    channel within `BAR_COLOUR_TOLERANCE`."""
    of_bar = cv2.inRange(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), colour.luma_low, colour.luma_high)
    return of_bar & cv2.inRange(pixels, colour.low, colour.high)


def _lines_of(block: np.ndarray, colour: _BarColour) -> np.ndarray:
    """Which lines of `block` are of the bar's colour, all but a few stray pixels."""
    return _of_colour(block, colour).mean(axis=1) >= 255 * BAR_LINE_SHARE


def _bar(lines: np.ndarray, most: int | None = None) -> tuple[int, np.ndarray]:
    """How many lines from the first (up to `most`) are of the first line's colour, and
    that colour."""
    spread = lines[0, ::max(1, lines.shape[1] // 16)].astype(np.int16)  # a photo's first line differs at once
    if (spread.max(axis=0) - spread.min(axis=0)).max() > 2 * BAR_TOLERANCE:
        return 0, np.zeros(3)
    colour = np.array(cv2.mean(np.ascontiguousarray(lines[:1]))[:3])
    bounds = _BarColour.of(colour)
    count, step = 0, 1  # the first line alone: most photos end their "bar" there
    end = lines.shape[0] if most is None else min(most, lines.shape[0])
    while count < end:
        within = _lines_of(np.ascontiguousarray(lines[count:min(count + step, end)]), bounds)
        if not within.all():
            return count + int(np.argmin(within)), colour
        count, step = count + len(within), min(2 * step + 6, 64)  # then more at a time: bars are dozens wide
    return count, colour
