"""The most matches one homography explains, for many pairs at once, on a device (GPU).

A screen before the host's fits (OpenCV's USAC_MAGSAC, `verify.fit_homography`): most
candidate pairs are not copies and their matches agree on no homography — on the cascade
bench 16,883 of 18,131 fits found fewer than the 15 inliers a copy needs, most of them
4–7. On a GPU host those fits ran on the host's threads at ~3.9k pairs/s, a quarter of
what the GPU matched (docs/performance.md §7). Here every pair's hypotheses are drawn,
solved and scored together on the device; a pair whose best consensus stays well below
what a copy needs, within a wider tolerance than the fit's and after more draws than the
fit's ceiling, is rejected without a fit, and every other pair is fitted on the host as
before.

Or every screened pair is fitted there (`best_homographies`): the same search, each model
then scored by MSAC's truncated cost and refitted by reweighted least squares, the best
one's inliers counted within the host fit's 4 px; the host measures only the fits with
enough inliers (coverage, pixel agreement), and no fit is left on its threads.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Twice the fit's 4 px, more draws than its 2,000-iteration ceiling, and a pair rejected
# only below two thirds of the inliers a copy needs: like any RANSAC the screen can miss a
# model of few inliers among many matches (on the hard set it found 13–14 where the fit
# found 17–26, in 5 of 3,557 fits), and it must reject only pairs the fit rejects too.
SCREEN_TOLERANCE = 8.0
SCREEN_HYPOTHESES = 2048
SCREEN_SHARE = 2 / 3
# Least-squares refits from the strongest hypotheses' inliers (RANSAC's local optimisation):
# a minimal sample of 4 noisy points misses inliers that the model of all of them explains.
SCREEN_REFITS = 2
REFITTED = 16  # hypotheses refitted per pair, the most consistent first
# A fit on the device (`best_homographies`) counts inliers as the host's fit does (USAC_MAGSAC
# at 4 px), but picks its model by MSAC's cost within 3 px: counted, a warped model gathering
# loose matches can beat the one the copy's matches fit closely (a hard-set pair: 295
# inliers against MAGSAC's 244, its frame's corners far off). One refit more than the screen.
FIT_TOLERANCE = 4.0
FIT_SCORE_TOLERANCE = 3.0
FIT_REFITS = 3


_MASK = 0x7FFFFFFF


def _mixed(keys):
    """A 31-bit hash of each 31-bit integer key (Mueller's 32-bit mixer, kept in 31 bits so
    every product fits int64): exact integer steps, so the same on every device."""
    for _ in range(2):
        keys = (((keys >> 16) ^ keys) * 0x45D9F3B) & _MASK
    return (keys >> 16) ^ keys


def _distinct_draws(pairs, counts, hypotheses: int, seed: int):
    """Row indices (pairs, hypotheses, 4), 4 distinct ones below each pair's count (≥ 4)
    per draw, uniformly: the k-th is drawn below count - k, then moved past the rows
    already drawn, in ascending order. The numbers are hashes of (pair, hypothesis, k,
    seed) computed where `counts` lie: no host work per draw (drawn on the host they cost
    ~0.5 ms per pair, more than a fit), and the same draws for a pair on every device and
    however pairs are grouped. `pairs`: each pair's own number (its position in the call)."""
    import torch

    device = counts.device
    pairs = pairs.to(device)[:, None, None]
    keys = ((pairs * hypotheses + torch.arange(hypotheses, device=device)[None, :, None]) * 4
            + torch.arange(4, device=device)[None, None, :] + seed * 0x9E3779B) & _MASK
    numbers = _mixed(keys)
    drawn = []
    for k in range(4):
        index = (numbers[..., k] * (counts[:, None] - k)) >> 31
        for earlier in (torch.sort(torch.stack(drawn, -1), -1).values.unbind(-1) if drawn else ()):
            index += index >= earlier
        drawn.append(index)
    return torch.stack(drawn, -1)


def _gaps(homographies, points_a, points_b):
    """(pairs, models, rows) H·a - b·w in x and y, and w (a's third coordinate under H)."""
    h = homographies[..., None]  # (pairs, models, 3, 3, 1) against rows (pairs, 1, rows)
    xa, ya = points_a[:, None, :, 0], points_a[:, None, :, 1]
    xb, yb = points_b[:, None, :, 0], points_b[:, None, :, 1]
    w = h[:, :, 2, 0] * xa + h[:, :, 2, 1] * ya + h[:, :, 2, 2]
    dx = h[:, :, 0, 0] * xa + h[:, :, 0, 1] * ya + h[:, :, 0, 2] - xb * w
    dy = h[:, :, 1, 0] * xa + h[:, :, 1, 1] * ya + h[:, :, 1, 2] - yb * w
    return dx, dy, w


def _inliers(homographies, points_a, points_b, valid, tolerance: float):
    """(pairs, models, rows) whether each row's a lands within `tolerance` of its b under
    each model; padding rows never, nor any row under a model holding NaN (no homography:
    every comparison with NaN is false). Without a division: |p·w - H·a| < tolerance·w."""
    dx, dy, w = _gaps(homographies, points_a, points_b)
    return (dx * dx + dy * dy < (tolerance * tolerance) * (w * w)) & valid[:, None, :]


def _scaled_errors(homographies, points_a, points_b, tolerance: float):
    """(pairs, models, rows) each row's squared distance from its match under each model,
    in units of tolerance² (NaN under a model holding NaN)."""
    dx, dy, w = _gaps(homographies, points_a, points_b)
    return (dx * dx + dy * dy) / ((tolerance * tolerance) * (w * w))


def _truncated_costs(scaled, valid):
    """(pairs, models) MSAC's cost of each model from `_scaled_errors`: 1 per row beyond
    the tolerance (or under a model holding NaN), its scaled error within it."""
    import torch

    return (torch.where(scaled < 1, scaled, 1.0) * valid[:, None, :]).sum(-1)


def _closeness(scaled, valid):
    """Weights of the rows for a model's least-squares refit: 1 - scaled error within the
    tolerance, 0 beyond (an iteratively reweighted fit, as MAGSAC weights its inliers)."""
    import torch

    return torch.where(scaled < 1, 1 - scaled, 0.0) * valid[:, None, :]


def _consensus_passes(points_a: Sequence[np.ndarray], points_b: Sequence[np.ndarray], device: str,
                      tolerance: float, hypotheses: int, refits: int, seed: int, elements_per_pass: int | None,
                      fitting: bool = False, score_tolerance: float = 0.0):
    """Per pass of pairs of similar sizes: (their positions, scores (pairs, kept), inlier
    masks (pairs, kept, rows), homographies (pairs, kept, 3, 3)) of each pair's strongest
    `REFITTED` hypotheses after the refits, the higher the score the stronger. Pairs with
    fewer than 4 matches are left out. Scores: inlier counts, the refits weighting the
    inliers alike; or for `fitting`, MSAC's truncated costs within `score_tolerance`,
    negated (`_truncated_costs`), the refits weighting each row by its closeness
    (`_closeness`), and a refit as strong as its model replacing it (least squares over
    all its inliers, not 4 of them: what a homography is measured by beyond them)."""
    import torch
    from kornia.geometry.homography import find_homography_dlt
    from kornia.geometry.transform import get_perspective_transform

    # ~0.5 GB per float64 temporary on a GPU, 32 MB on a CPU.
    budget = elements_per_pass or (2**26 if str(device).startswith("cuda") else 2**22)
    counts = np.array([len(p) for p in points_a], np.int64)
    # Similar sizes together: a pass pads its pairs to its most matches.
    order = [k for k in np.argsort(counts, kind="stable") if counts[k] >= 4]
    start = 0
    with torch.inference_mode():
        while start < len(order):
            size = 1
            while start + size < len(order) and (size + 1) * hypotheses * int(counts[order[start + size]]) <= budget:
                size += 1
            chunk = order[start:start + size]
            start += size
            rows = int(counts[chunk[-1]])
            padded = np.zeros((2, len(chunk), rows, 2), np.float64)
            for k, pair in enumerate(chunk):
                padded[0, k, :counts[pair]] = np.asarray(points_a[pair], np.float64).reshape(-1, 2)
                padded[1, k, :counts[pair]] = np.asarray(points_b[pair], np.float64).reshape(-1, 2)
            sizes = torch.from_numpy(counts[chunk]).to(device)
            a, b = torch.from_numpy(padded).to(device).unbind(0)
            valid = torch.arange(rows, device=device)[None] < sizes[:, None]
            draws = _distinct_draws(torch.as_tensor(chunk), sizes, hypotheses, seed)
            pick = torch.arange(len(chunk), device=device)[:, None]
            # A draw with no homography gives NaN, which compares false: no inliers (`_inliers`).
            models = get_perspective_transform(a[pick[..., None], draws].reshape(-1, 4, 2),
                                               b[pick[..., None], draws].reshape(-1, 4, 2))
            models = models.reshape(len(chunk), hypotheses, 3, 3)
            inliers = _inliers(models, a, b, valid, tolerance)
            # The strongest few, not the strongest alone: a sample of 4 true matches with
            # noise can explain fewer of them than a chance model explains outliers.
            kept = min(REFITTED, hypotheses)

            def scored(candidates, candidate_mask, scaled=None):
                """(scores, refit weights) of models: their inlier counts and inliers alike; or
                for `fitting`, MSAC's negated costs and each row's closeness."""
                if not fitting:
                    return candidate_mask.sum(-1), candidate_mask.to(a.dtype)
                scaled = _scaled_errors(candidates, a, b, score_tolerance) if scaled is None else scaled
                return -_truncated_costs(scaled, valid), _closeness(scaled, valid)

            strongest = inliers.sum(-1).topk(kept, dim=-1).indices
            scaled = None
            if fitting:
                # Half the strongest by their counts, half by their costs: a count within
                # the wide tolerance finds a model from noisy samples, a cost within the
                # narrow one the model the matches fit closely.
                scaled = _scaled_errors(models, a, b, score_tolerance)
                costs = _truncated_costs(scaled, valid)
                strongest = torch.cat([strongest[:, :kept // 2], (-costs).topk(kept - kept // 2, dim=-1).indices], 1)
                scaled = scaled[pick, strongest]
            mask, models = inliers[pick, strongest], models[pick, strongest]
            found, weights = scored(models, mask, scaled)
            pairs, kept = mask.shape[:2]
            for _ in range(refits):
                # Fewer than 4 inliers leave no model to refit (NaN, then no inliers).
                refitted = find_homography_dlt(a.repeat_interleave(kept, 0), b.repeat_interleave(kept, 0),
                                               weights.reshape(pairs * kept, -1), solver="svd")
                refitted = refitted.reshape(pairs, kept, 3, 3)
                mask_refit = _inliers(refitted, a, b, valid, tolerance)
                refound, reweights = scored(refitted, mask_refit)
                better = refound >= found if fitting else refound > found
                found = torch.where(better, refound, found)
                mask = torch.where(better[..., None], mask_refit, mask)
                weights = torch.where(better[..., None], reweights, weights)
                models = torch.where(better[..., None, None], refitted, models)
            yield chunk, found, mask, models


def most_consistent(points_a: Sequence[np.ndarray], points_b: Sequence[np.ndarray], device: str = "cpu",
                    tolerance: float = SCREEN_TOLERANCE, hypotheses: int = SCREEN_HYPOTHESES,
                    refits: int = SCREEN_REFITS, seed: int = 0, elements_per_pass: int | None = None) -> np.ndarray:
    """For each pair of matched point sets (m, 2) — row k of a matched to row k of b — the
    most rows one homography maps from a to within `tolerance` pixels of b: the best of
    `hypotheses` homographies from 4 matches each (kornia's `get_perspective_transform`),
    the strongest `REFITTED` of them refitted `refits` times to their inliers (kornia's
    weighted DLT, as RANSAC's local optimisation).
    A lower bound on the best model's inliers, like any RANSAC's. Pairs with fewer than 4
    matches get 0. Draws are hashes of each pair's position, its hypothesis and `seed`
    (`_distinct_draws`): the same on every device. `elements_per_pass`: pairs ×
    hypotheses × matches scored at once (memory)."""
    best = np.zeros(len(points_a), np.int64)
    for chunk, found, _, _ in _consensus_passes(points_a, points_b, device, tolerance, hypotheses, refits, seed,
                                                elements_per_pass):
        best[chunk] = found.max(-1).values.cpu().numpy()
    return best


def best_homographies(points_a: Sequence[np.ndarray], points_b: Sequence[np.ndarray], device: str = "cpu",
                      tolerance: float = FIT_TOLERANCE, hypotheses: int = SCREEN_HYPOTHESES,
                      refits: int = FIT_REFITS, seed: int = 0, score_tolerance: float = FIT_SCORE_TOLERANCE,
                      elements_per_pass: int | None = None) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Each pair's homography fitting its matches best within `tolerance` pixels (searched
    as `most_consistent` searches, scored by MSAC's truncated cost), and which matches it
    explains: a fit of many pairs at once on the device, in place of one RANSAC per pair
    on the host's threads. (None, no inliers) for a pair with fewer than 4 matches or no
    homography."""
    import torch

    fits: list[tuple[np.ndarray | None, np.ndarray]] = [(None, np.zeros(len(p), bool)) for p in points_a]
    for chunk, found, mask, models in _consensus_passes(points_a, points_b, device, tolerance, hypotheses, refits,
                                                        seed, elements_per_pass, fitting=True,
                                                        score_tolerance=score_tolerance):
        strongest = found.argmax(-1)
        pick = torch.arange(len(chunk), device=found.device)
        masks = mask[pick, strongest].cpu().numpy()
        homographies = models[pick, strongest].cpu().numpy()
        for k, pair in enumerate(chunk):
            if masks[k].any():
                fits[pair] = (homographies[k], masks[k, :len(points_a[pair])].copy())
    return fits


def screen_rejects(consistent: np.ndarray, needed: int) -> np.ndarray:
    """Which pairs, by their `most_consistent` count, no fit needing `needed` inliers passes."""
    return consistent < SCREEN_SHARE * needed
