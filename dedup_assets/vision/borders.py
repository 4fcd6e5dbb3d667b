"""Uniform borders added around a picture: letterboxing, a photo padded to a square.

Such a copy holds the same picture inside bars of one colour. Matched whole, its extra
frame makes the original look like a crop of it (and the padded copy the "whole frame",
with more pixels); its hash and embedding shift with the bars. Found here, the bars are
cut away before anything is measured, so every later stage sees the picture.

Only bars on two opposite sides, of one colour and about the same width, count: a
photo's own flat sky or wall sits on one side, where cutting it would change the photo.
A background of one colour reaching three edges or all four is cut however wide on each
side: an object on it (a product shot) is the picture, however it was framed or cropped.

An overlay set in the padding (a caption, a logo, a price, subtitles in a letterbox)
breaks the bars it crosses: the captioned copy was not cut where its original was, the
two were never compared, and every product captioned alike matched the others by the
caption. Where the picture is one blob, such marks apart from it are painted over with
the padding's colour before the bars are found (`find_picture`).
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
# An overlay is marks on the padding apart from the picture. The picture is one blob
# holding at least this share of all that is not padding (not a page of text's letters) ...
PICTURE_SHARE = 0.5
# ... boxed with its parts of at least this share of it (a shoe of a pair) and whatever
# touches that box. Each mark apart from it is at most this share of it (a caption's
# letter: ~1 %; a second picture beside it is no mark) ...
PICTURE_PART = 0.25
MARK_SIZE = 0.05
# ... and all of them at least this share of the image (fewer pixels are a re-encoded
# padding's specks) and at most this share of what is not padding.
MIN_OVERLAY = 0.002
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
    """The picture inside uniform bars or a uniform background (`picture_box`), any overlay
    on the padding painted over with the padding's colour first."""
    edges = _edges(rgb)
    colour = _padding_colour(edges)
    cleaned = _without_overlays(rgb, colour) if colour is not None else None
    if cleaned is not None:
        return Picture(picture_box(cleaned), cleaned)
    return Picture(_box_within(edges, *rgb.shape[:2]), rgb)


def picture_box(rgb: np.ndarray) -> Box:
    """Where the picture lies inside uniform bars on opposite sides, or inside a uniform
    background (the whole image when there are none)."""
    return _box_within(_edges(rgb), *rgb.shape[:2])


def _edges(rgb: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """`_bar` at the top, bottom, left and right edges (a photo's: 0 each, one line read)."""
    columns = rgb.transpose(1, 0, 2)
    return [_bar(rgb), _bar(rgb[::-1]), _bar(columns), _bar(columns[::-1])]


def _box_within(edges: list[tuple[int, np.ndarray]], height: int, width: int) -> Box:
    if (around := _inside_background(edges, height, width)) is not None:
        return around
    top, bottom = _opposite_bars(*edges[:2], height)
    left, right = _opposite_bars(*edges[2:], width)
    return Box(top, height - bottom, left, width - right)


def _inside_background(edges: list[tuple[int, np.ndarray]], height: int, width: int) -> Box | None:
    """An object on a background of one colour reaching three edges or all four (a product
    shot, an icon, a page; cropped, the object may touch the fourth): each side's margin
    is cut however wide, so that a copy cropped or re-framed on that background gives the
    same picture. Bars on two opposite sides only must pair up (`_opposite_bars`): a
    photo's own flat sky reaches one edge."""
    uniform = [colour for count, colour in edges if count]
    if len(uniform) < 3 or any(np.abs(colour - uniform[0]).max() > BAR_TOLERANCE for colour in uniform):
        return None
    top, bottom, left, right = (count for count, _ in edges)
    if max(top, bottom) < MIN_BAR * height and max(left, right) < MIN_BAR * width:
        return None  # a thin frame, an edge's artefact: no padding
    if height - top - bottom < MIN_PICTURE * height or width - left - right < MIN_PICTURE * width:
        return None
    return Box(top, height - bottom, left, width - right)


def _opposite_bars(first: tuple[int, np.ndarray], last: tuple[int, np.ndarray], size: int) -> tuple[int, int]:
    """Widths of the bars at two opposite edges (`_bar`s), both 0 unless they are a pair."""
    (first, first_colour), (last, last_colour) = first, last
    if (first < MIN_BAR * size or last < MIN_BAR * size
            or abs(first - last) > BAR_WIDTH_TOLERANCE * size + JPEG_BLOCK
            or np.abs(first_colour - last_colour).max() > BAR_TOLERANCE
            or size - first - last < MIN_PICTURE * size):
        return 0, 0
    return first, last


def _padding_colour(edges: list[tuple[int, np.ndarray]]) -> np.ndarray | None:
    """The colour of two opposite edges, if both are of one (a caption may reach a third)."""
    for (first, first_colour), (last, last_colour) in (edges[:2], edges[2:]):
        if first and last and np.abs(first_colour - last_colour).max() <= BAR_TOLERANCE:
            return (first_colour + last_colour) / 2
    return None


def _without_overlays(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
    """The image with marks apart from the picture painted `colour`; None unless the
    picture is one blob and the marks are small, few and apart from it."""
    marks = cv2.bitwise_not(_of_colour(rgb, _BarColour.of(colour)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(marks, connectivity=8)
    if count < 3:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    if areas.max() < PICTURE_SHARE * areas.sum():
        return None
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[1:, cv2.CC_STAT_WIDTH], top + stats[1:, cv2.CC_STAT_HEIGHT]
    parts = areas >= PICTURE_PART * areas.max()
    x0, y0, x1, y1 = left[parts].min(), top[parts].min(), right[parts].max(), bottom[parts].max()
    apart = (right <= x0) | (left >= x1) | (bottom <= y0) | (top >= y1)
    overlay = areas[apart].sum()
    if (overlay < MIN_OVERLAY * rgb.shape[0] * rgb.shape[1] or overlay > MAX_OVERLAY * areas.sum()
            or areas[apart].max() > MARK_SIZE * areas.max()):
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
