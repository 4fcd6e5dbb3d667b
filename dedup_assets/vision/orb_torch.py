"""ORB-style features of many images at once, computed by PyTorch: on a GPU, describing
leaves the host.

OpenCV's ORB describes on the host's cores only (no CUDA build ships on PyPI): ~1,000
images/s on a 16-vCPU GPU host, most of that host's time for 3M images
(docs/performance.md §7). This is the same recipe, batched: an image pyramid (8 levels,
each 1/1.2 of the one before, bilinear), FAST-9 corners (threshold 10) kept where their
Harris response is a 3×3 maximum, the strongest per level (OpenCV's share per level),
each oriented by its intensity centroid (radius 15) and described by 256 intensity tests
of a Gaussian-smoothed (7×7, σ 2) patch, steered by that orientation (rBRIEF's idea).
Not OpenCV's bits: the tests are this module's own, drawn once from BRIEF's isotropic
Gaussian (σ = 31/5, within the 31×31 patch) with a fixed seed, and ties and rounding
differ; so its features are stored apart from OpenCV ORB's (the verifier's key) and its
decisions were checked on the labelled set on their own.

Images arrive already equalised (CLAHE on the host, as ORB's) and padded together; each
image's results depend only on its own pixels, not on what shares its pass.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d, spatial_gradient

LEVELS = 8
SCALE = 1.2
FAST_THRESHOLD = 10
BORDER = 31  # as ORB's edgeThreshold: every steered test stays inside the image
HARRIS_K = 0.04
HARRIS_BLOCK = 7
PATCH_RADIUS = 15
TESTS = 256

# FAST's circle of 16 pixels at radius 3, in order around it: (dx, dy).
_CIRCLE = ((0, -3), (1, -3), (2, -2), (3, -1), (3, 0), (3, 1), (2, 2), (1, 3),
           (0, 3), (-1, 3), (-2, 2), (-3, 1), (-3, 0), (-3, -1), (-2, -2), (-1, -3))


def _test_pattern(seed: int = 20261128) -> np.ndarray:
    """(TESTS, 4) int: x1, y1, x2, y2 of each intensity test, drawn from an isotropic
    Gaussian of σ = 31/5 (BRIEF's G II), clipped to the patch, no test comparing a pixel
    with itself."""
    rng = np.random.default_rng(seed)
    tests = np.zeros((0, 4), np.int64)
    while len(tests) < TESTS:
        drawn = np.clip(np.rint(rng.normal(0, 31 / 5, (TESTS, 4))), -PATCH_RADIUS, PATCH_RADIUS).astype(np.int64)
        drawn = drawn[(drawn[:, 0] != drawn[:, 2]) | (drawn[:, 1] != drawn[:, 3])]
        tests = np.unique(np.vstack([tests, drawn]), axis=0)
    return rng.permutation(tests)[:TESTS]


_TESTS = _test_pattern()
_DISK = np.array([(dx, dy) for dy in range(-PATCH_RADIUS, PATCH_RADIUS + 1)
                  for dx in range(-PATCH_RADIUS, PATCH_RADIUS + 1) if dx * dx + dy * dy <= PATCH_RADIUS ** 2])


def features_per_level(features: int, levels: int = LEVELS, scale: float = SCALE) -> list[int]:
    """ORB's split of the keypoints across the pyramid: a geometric share per level (the
    area shrinks by scale² a level, the share by scale), the last taking what is left."""
    factor = 1 / scale
    share = features * (1 - factor) / (1 - factor ** levels)
    counts = []
    for _ in range(levels - 1):
        counts.append(int(round(share)))
        share *= factor
    counts.append(max(features - sum(counts), 0))
    return counts


def _fast_corners(level: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, h, w) bool: pixels with 9 contiguous circle pixels all brighter than it by
    more than `threshold`, or all darker (FAST-9)."""
    padded = F.pad(level, (3, 3, 3, 3), mode="replicate")
    height, width = level.shape[-2:]
    ring = [padded[..., 3 + dy:3 + dy + height, 3 + dx:3 + dx + width] for dx, dy in _CIRCLE]  # views
    brighter, darker = level + threshold, level - threshold
    corner = torch.zeros(level.shape, dtype=torch.bool, device=level.device)
    # One byte per circle pixel and image pixel (a stack of the ring's values would be 4).
    for side in (torch.stack([pixel > brighter for pixel in ring]), torch.stack([pixel < darker for pixel in ring])):
        # Runs of 2, 4, 8 contiguous circle pixels starting at each of the 16, then 9.
        run2 = side & side.roll(-1, 0)
        run4 = run2 & run2.roll(-2, 0)
        run9 = run4 & run4.roll(-4, 0) & side.roll(-8, 0)
        corner |= run9.any(0)
    return corner


def _harris(level: torch.Tensor) -> torch.Tensor:
    """Harris' corner response over a 7×7 window of Sobel gradients, (B, 1, h, w)."""
    gradients = spatial_gradient(level, mode="sobel", normalized=False)  # (B, 1, 2, h, w), borders replicated
    dx, dy = gradients[:, :, 0], gradients[:, :, 1]
    pad = HARRIS_BLOCK // 2
    window = lambda x: F.avg_pool2d(x, HARRIS_BLOCK, stride=1, padding=pad, count_include_pad=True)  # noqa: E731
    xx, yy, xy = window(dx * dx), window(dy * dy), window(dx * dy)
    return xx * yy - xy * xy - HARRIS_K * (xx + yy) ** 2


def _gather(level: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """level[b, 0, y, x] for index tensors y, x of shape (B, ...), clamped to the level
    (only the places of missing keypoints, whose results are dropped, fall outside)."""
    batch, _, height, width = level.shape
    flat = (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).reshape(batch, -1)
    return level.reshape(batch, -1).gather(1, flat).reshape(y.shape)


def describe_batch(grays: list[np.ndarray], device: str = "cpu",
                   features: int = 1000) -> list[tuple[np.ndarray, np.ndarray]]:
    """Keypoints (n, 2) float32 pixels (x, y) and 32-byte descriptors (n, 32) uint8 of
    each uint8 gray image, n ≤ `features`; the images are processed together on `device`."""
    if not grays:
        return []
    height, width = max(g.shape[0] for g in grays), max(g.shape[1] for g in grays)
    canvas = np.zeros((len(grays), 1, height, width), np.float32)
    for k, gray in enumerate(grays):
        canvas[k, 0, :gray.shape[0], :gray.shape[1]] = gray
    sizes = torch.tensor([g.shape[:2] for g in grays], dtype=torch.float32, device=device)  # (h, w)
    tests = torch.from_numpy(_TESTS).to(device, torch.float32)
    disk = torch.from_numpy(_DISK).to(device)
    found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in grays]
    with torch.inference_mode():
        level = torch.from_numpy(canvas).to(device)
        for depth, wanted in enumerate(features_per_level(features)):
            if depth:
                # Each level from the one before, by a fixed factor: an image's pixels do
                # not depend on the size of the canvas it shares.
                level = F.interpolate(level, scale_factor=1 / SCALE, mode="bilinear", align_corners=False,
                                      recompute_scale_factor=False).round()
            scale = SCALE ** depth
            h, w = level.shape[-2:]
            if wanted == 0 or min(h, w) <= 2 * BORDER:
                continue
            rows = torch.arange(h, device=device).view(1, 1, h, 1)
            columns = torch.arange(w, device=device).view(1, 1, 1, w)
            inside = ((rows >= BORDER) & (columns >= BORDER)
                      & (rows < (sizes[:, 0] / scale).floor().view(-1, 1, 1, 1) - BORDER)
                      & (columns < (sizes[:, 1] / scale).floor().view(-1, 1, 1, 1) - BORDER))
            response = _harris(level)
            candidate = _fast_corners(level, FAST_THRESHOLD) & inside
            score = torch.where(candidate, response, torch.full_like(response, -torch.inf))
            peak = candidate & (score == F.max_pool2d(score, 3, stride=1, padding=1))
            score = torch.where(peak, score, torch.full_like(score, -torch.inf)).flatten(1)
            best, index = score.topk(min(wanted, score.shape[1]), dim=1)
            y, x = index // w, index % w  # (B, n)

            # Orientation: the intensity centroid of the disk around each keypoint.
            values = _gather(level, y[..., None] + disk[:, 1], x[..., None] + disk[:, 0])
            m10 = (values * disk[:, 0]).sum(-1)
            m01 = (values * disk[:, 1]).sum(-1)
            angle = torch.atan2(m01, m10)
            cos, sin = angle.cos()[..., None], angle.sin()[..., None]

            # Steered tests on the smoothed level.
            smooth = gaussian_blur2d(level, (7, 7), (2.0, 2.0), border_type="reflect")
            points = []
            for px, py in ((tests[:, 0], tests[:, 1]), (tests[:, 2], tests[:, 3])):
                rx = torch.round(px * cos - py * sin).to(torch.int64)
                ry = torch.round(px * sin + py * cos).to(torch.int64)
                points.append(_gather(smooth, y[..., None] + ry, x[..., None] + rx))
            bits = (points[0] < points[1]).view(*points[0].shape[:2], TESTS // 8, 8).to(torch.int32)
            packed = (bits << torch.arange(8, dtype=torch.int32, device=device)).sum(-1).to(torch.uint8)

            keypoints = torch.stack([(x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5], -1)
            keypoints, packed, keep = keypoints.cpu().numpy(), packed.cpu().numpy(), torch.isfinite(best).cpu().numpy()
            for k in range(len(grays)):
                found[k].append((keypoints[k][keep[k]], packed[k][keep[k]]))
    return [(np.concatenate([p for p, _ in levels] or [np.zeros((0, 2))]).astype(np.float32),
             np.concatenate([d for _, d in levels] or [np.zeros((0, 32), np.uint8)]))
            for levels in found]
