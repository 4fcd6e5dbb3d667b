"""The decision for one candidate pair, cheapest evidence first.

1. Near-identical wavelet hashes with agreeing colours and embeddings: accepted, unless
   verification matched enough keypoints for its own verdict to stand, and rejects (a
   64-bit hash sees only a page's layout: two different pages of text share it), or
   matched enough to fit and no homography explains half of the matches (a copy's
   matches agree; two products photographed in one framing share only their outline),
   or found next to nothing in common between two images rich in keypoints.
   Only hashes that say something count: two different products on white both hash to 0.
2. Policies: grayscale copies (and mirrored copies, in the verifier) count as duplicates
   only when configured to.
3. Everything else is verified geometrically: enough inliers under one homography, not
   packed into one small patch (two products sharing a photo patch); once
   aligned, pixels that agree over the whole overlap (a caption or logo shared by two
   different photos matches, but the rest of the images does not) or beside a background
   the two have in colours far apart (a cut-out on white and on black), or in most of its
   windows (an overlay on one copy, a sticker, disagrees only where it lies); and the shared
   region covering enough of *both* images (so a crop keeping most of the frame is a
   duplicate, while two neighbouring crops, or a collage and one of its parts, are not).
"""

from __future__ import annotations

from dataclasses import dataclass

from dedup_assets.vision.verify import LOW_TEXTURE_KEYPOINTS, SEARCHED_INLIER_SHARE, Verification


@dataclass(frozen=True)
class CascadePolicy:
    accept_hamming: int = 4  # bits: at or below, with agreeing colours and embeddings, a copy
    accept_min_cosine: float = 0.85
    color_agreement: float = 12.0  # mean |ΔLab| per grid cell
    min_inliers: int = 15
    # Verification overrules near-identical hashes only with this many ratio-test matches.
    # Different pages of text: 117-163 matches, 7-20 inliers; the near-hash copies that
    # verification rejects on the hard set (smooth or heavily recompressed): at most 27.
    overrule_hash_matches: int = 60
    # ... or with `min_inliers` matches or more, fewer than this share of them on the best
    # homography (verification's search is sized to find it: `SEARCHED_INLIER_SHARE`).
    # Products of one framing on white: 0-39 %; the hard set's copies verification
    # rejects: 56-88 % (a copy's wrong matches are few), or fewer than 15 matches.
    overrule_inlier_share: float = SEARCHED_INLIER_SHARE
    # ... or with fewer than `min_inliers` matches between two images with at least this
    # many keypoints each: nothing in common. Two product shots of one framing: 13 matches
    # of 966 keypoints; the hard set's near-hash copies with fewer than 15 matches have at
    # most 31 keypoints (smooth photos), and photos under noise (σ 40), a 3 px blur or
    # quality 5 still match 21 or more.
    overrule_textured_keypoints: int = LOW_TEXTURE_KEYPOINTS
    min_coverage: float = 0.55  # of each image, by the shared region
    min_agreement: float = 0.6  # pixel correlation over the overlap, once aligned
    # ... or this share of the overlap's textured windows agreeing (`verify.Agreement`): the
    # edits set's copies under a sticker correlate 0.19-0.57 over all, 0.79-1.0 of their
    # windows agree; different photos sharing a caption or patch, whole correlation under
    # 0.6: at most 0.52 of their windows (hard set), 0.25 (cascade bench), 0.21 (products).
    min_window_agreement: float = 0.75
    # The inliers' convex hull, as a share of the smaller image: packed tighter, they sit on
    # a shared patch or logo (two products sharing a photo patch: 0.005, agreeing 0.63 by
    # their frames' likeness); the labelled sets' and the cascade bench's copies: ≥ 0.027.
    min_spread: float = 0.01
    # Without keypoints (smooth photos), only intensity alignment is left: demand more,
    # unless the hashes and colours already agree (a colour-agreeing near-hash pair).
    min_dense_agreement: float = 0.99
    min_dense_agreement_near_hash: float = 0.95
    candidate_hamming: int = 10  # the near-hash radius of color_candidates
    grayscale_is_duplicate: bool = True
    mirrored_is_duplicate: bool = False


@dataclass(frozen=True)
class Decision:
    is_duplicate: bool
    stage: str  # which stage decided: hash, policy, verify, screen (verification's, on a GPU)
    reason: str


def near_identical(hamming: int, color_distance: float, cosine: float, policy: CascadePolicy,
                   hashes_informative: bool = True) -> bool:
    return (hashes_informative and hamming <= policy.accept_hamming and color_distance <= policy.color_agreement
            and cosine >= policy.accept_min_cosine)


def verification_can_overrule(verification: Verification | None, policy: CascadePolicy) -> bool:
    """Enough keypoints matched for verification to judge detail the hashes cannot see,
    or to show that they do not belong to one picture."""
    if verification is None or verification.method == "dense":
        return False
    if verification.matches < policy.min_inliers:
        return verification.keypoints is not None and verification.keypoints >= policy.overrule_textured_keypoints
    return (verification.matches >= policy.overrule_hash_matches
            or verification.inliers < policy.overrule_inlier_share * verification.matches)


def decide(hamming: int, color_distance: float, cosine: float, gray_a: bool, gray_b: bool,
           verification: Verification | None, policy: CascadePolicy, hashes_informative: bool = True,
           multi_picture: tuple[bool, bool] = (False, False)) -> Decision:
    """hashes_informative: both hashes split their cells nearly evenly
    (`hashing.is_informative`); else their agreement is no evidence of one picture.
    multi_picture: whether each file holds several pictures (an animation, a document of pages)."""
    if multi_picture[0] != multi_picture[1]:
        # A slideshow GIF of photos and one of the photos (at 12 MP, or its poster), a
        # scanned document and its cover page share a picture: either kept copy would
        # lose the other.
        return Decision(False, "policy", "a file of several pictures (an animation, a document of pages) and "
                        "a single picture are different assets (one picture in common)")
    if gray_a != gray_b and not policy.grayscale_is_duplicate:
        return Decision(False, "policy", "grayscale copy of a colour image (grayscale_is_duplicate=false)")
    if (near_identical(hamming, color_distance, cosine, policy, hashes_informative)
            and not verification_can_overrule(verification, policy)):
        return Decision(True, "hash", f"near-identical: hamming {hamming}, colour Δ {color_distance:.1f}, cosine {cosine:.2f}")
    if verification is None:
        raise ValueError("this pair needs geometric verification")
    if verification.mirrored and not policy.mirrored_is_duplicate:
        return Decision(False, "policy", "mirrored copy (mirrored_is_duplicate=false)")
    # A keypoint fit found on the device says so: not the host's RANSAC's.
    inliers = f"{verification.inliers} inliers" + (" (fitted on the device)" if verification.method == "device" else "")
    if verification.method == "dense":
        near_hash = (hashes_informative and hamming <= policy.candidate_hamming
                     and color_distance <= policy.color_agreement)
        needed = policy.min_dense_agreement_near_hash if near_hash else policy.min_dense_agreement
        if verification.agreement < needed:
            return Decision(False, "verify", "too few keypoints, and dense alignment agrees only "
                            f"{verification.agreement:.3f} (< {needed})")
    elif verification.matches < policy.min_inliers:
        return Decision(False, "verify", f"{verification.matches} matches, fewer than the "
                        f"{policy.min_inliers} inliers needed")
    elif verification.method == "screen":
        return Decision(False, "screen", f"{verification.inliers} inliers < {policy.min_inliers} "
                        "(the most one homography explains, screened on the device before any fit)")
    elif verification.inliers < policy.min_inliers:
        return Decision(False, "verify", f"{inliers} < {policy.min_inliers}")
    # Coverage first: a verifier compares the pixels only of a fit covering enough.
    if verification.min_coverage < policy.min_coverage:
        return Decision(False, "verify", f"{inliers} but the shared region covers "
                        f"{verification.coverage_a:.0%} / {verification.coverage_b:.0%} of the images")
    if verification.method != "dense" and verification.spread < policy.min_spread:
        return Decision(False, "verify", f"{inliers}, but packed into {verification.spread:.1%} of the "
                        "smaller image (a shared patch or logo?)")
    shared = f"shared region covers {verification.coverage_a:.0%} / {verification.coverage_b:.0%}"
    if verification.agreement < policy.min_agreement:
        if verification.matte_agreement >= policy.min_agreement:
            return Decision(True, "verify", f"{inliers}, {shared}; the pixels agree {verification.matte_agreement:.2f} "
                            f"beside a background of other colours in each (a cut-out on another matte), "
                            f"{verification.agreement:.2f} over all")
        if verification.window_agreement < policy.min_window_agreement:
            return Decision(False, "verify", f"{inliers}, but once aligned the pixels agree only "
                            f"{verification.agreement:.2f}, and in {verification.window_agreement:.0%} of "
                            "the windows (a shared caption or logo?)")
        return Decision(True, "verify", f"{inliers}, {shared}; the pixels agree in "
                        f"{verification.window_agreement:.0%} of the windows, {verification.agreement:.2f} "
                        "over all (an overlay on one copy?)")
    evidence = f"dense alignment agrees {verification.agreement:.2f}" if verification.method == "dense" else inliers
    return Decision(True, "verify", f"{evidence}, {shared}")
