import numpy as np
import pytest
import torch

from dedup_assets.vision.cascade import CascadePolicy, decide
from dedup_assets.vision.consensus import _distinct_draws, best_homographies, most_consistent, screen_rejects
from dedup_assets.vision.verify import OrbVerifier, load_verifier

HOMOGRAPHY = np.array([[0.9, 0.05, 30.0], [-0.04, 1.1, 12.0], [1e-4, 0.0, 1.0]])


def hidden_inliers(seed: int, inliers: int = 16, outliers: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """`inliers` matches under one homography (half a pixel of noise) among random ones."""
    rng = np.random.default_rng(seed)
    inliers_a = rng.uniform(0, 500, (inliers, 2))
    projected = np.c_[inliers_a, np.ones(inliers)] @ HOMOGRAPHY.T
    inliers_b = projected[:, :2] / projected[:, 2:] + rng.normal(0, 0.5, (inliers, 2))
    order = rng.permutation(inliers + outliers)
    points_a = np.vstack([inliers_a, rng.uniform(0, 500, (outliers, 2))])[order]
    points_b = np.vstack([inliers_b, rng.uniform(0, 500, (outliers, 2))])[order]
    return points_a.astype(np.float32), points_b.astype(np.float32)


def test_draws_without_a_homography_count_nothing_and_spare_the_other_pairs():
    """Six matches all from one point of a: every draw of 4 is singular (kornia's solve
    gives NaN), which must count no inliers rather than spoil the pass its neighbours share."""
    same_point = np.zeros((6, 2), np.float32)
    spread = np.float32([[0, 0], [100, 0], [100, 100], [0, 100], [50, 20], [20, 70]])
    points_a, points_b = hidden_inliers(1)
    found = most_consistent([same_point, points_a], [spread, points_b])
    assert found[0] == 0 and found[1] >= 16


def test_draws_are_distinct_matches_each_equally_likely():
    counts = torch.tensor([4, 6, 40])
    draws = _distinct_draws(torch.arange(3), counts, 3000, seed=1)
    assert not torch.equal(draws, _distinct_draws(torch.arange(3), counts, 3000, seed=2))
    for pair, count in enumerate(counts.tolist()):
        rows = draws[pair]
        assert int(rows.min()) >= 0 and int(rows.max()) < count
        assert all(len(set(draw)) == 4 for draw in rows.tolist())
        frequency = np.bincount(rows.ravel().numpy(), minlength=count) / len(rows)
        np.testing.assert_allclose(frequency, 4 / count, atol=0.05)  # each row in 4 of `count` draws


@pytest.mark.parametrize("seed", range(10))
def test_barely_enough_inliers_among_many_outliers_are_found(seed):
    """As the host's fit must (`test_verify`), with the same 16 of 40: a screen that missed
    them would reject a pair the fit passes."""
    points_a, points_b = hidden_inliers(seed)
    assert most_consistent([points_a], [points_b])[0] >= 16


def test_random_matches_agree_on_no_homography_and_too_few_matches_on_none():
    rng = np.random.default_rng(3)
    random_a, random_b = rng.uniform(0, 500, (2, 60, 2)).astype(np.float32)
    three_a, three_b = hidden_inliers(0, inliers=3, outliers=0)
    found = most_consistent([random_a, three_a], [random_b, three_b])
    assert found[0] < 15
    assert found[1] == 0


def test_only_pairs_well_below_the_inliers_needed_are_rejected():
    """A margin for what any RANSAC may miss: with 15 needed, 10 found goes on to the fit."""
    np.testing.assert_array_equal(screen_rejects(np.array([0, 9, 10, 14, 15, 40]), 15),
                                  [True, True, False, False, False, False])


def test_the_same_consensus_whatever_the_pairs_per_pass():
    """Draws come from one seeded CPU generator in a fixed order, so results do not depend
    on how pairs are grouped (nor, by the same token, on the device)."""
    pairs = [hidden_inliers(seed, inliers=8 + seed, outliers=10 + 3 * seed) for seed in range(8)]
    points_a, points_b = [a for a, _ in pairs], [b for _, b in pairs]
    one_pass = most_consistent(points_a, points_b)
    pass_per_pair = most_consistent(points_a, points_b, elements_per_pass=1)
    np.testing.assert_array_equal(one_pass, pass_per_pair)
    assert all(found >= 8 + seed for seed, found in enumerate(one_pass))


def test_screened_pairs_are_rejected_without_a_fit_and_the_rest_decided_as_before(samples, monkeypatch):
    """ORB's slice of pairs with the screen (on PyTorch's CPU here, where it is off by
    default): the same decisions as without it, the pairs it rejects never reach the fit."""
    import dedup_assets.vision.verify as verify

    names = ["astronaut", "astronaut_crop", "astronaut_left", "astronaut_right", "coffee", "coffee_captioned",
             "chelsea_captioned", "coffee_as_astronaut_colours"]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    fits = []
    original_fit = verify.fit_homography
    monkeypatch.setattr(verify, "fit_homography", lambda *args, **kwargs: fits.append(1) or original_fit(*args, **kwargs))

    def verified(screen_device):
        verifier = OrbVerifier(device="cpu")
        verifier.screen_device = screen_device
        prepared = {name: verifier.prepare(samples[name]) for name in names}
        fits.clear()
        results = verifier.verify_many([(prepared[a], prepared[b]) for a, b in pairs])
        return results, len(fits)

    plain, plain_fits = verified(None)
    screened, screened_fits = verified("cpu")
    policy = CascadePolicy()
    assert [decide(99, 99.0, 0.0, False, False, r, policy).is_duplicate for r in screened] == \
        [decide(99, 99.0, 0.0, False, False, r, policy).is_duplicate for r in plain]
    changed = [(s, p) for s, p in zip(screened, plain) if s != p]
    assert changed and screened_fits == plain_fits - len(changed)  # some screened, none of them fitted
    for screen, fit in changed:
        assert screen.matches == fit.matches >= policy.min_inliers > max(screen.inliers, fit.inliers)
        assert screen.coverage_a == screen.coverage_b == 0.0 and screen.method == "screen"
        decision = decide(99, 99.0, 0.0, False, False, screen, policy)
        assert (decision.is_duplicate, decision.stage) == (False, "screen")  # counted apart in `decided_by`
        assert decision.reason.startswith(f"{screen.inliers} inliers < 15")


def projected(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped = np.c_[points, np.ones(len(points))] @ homography.T
    return mapped[:, :2] / mapped[:, 2:]


@pytest.mark.parametrize("seed", range(6))
def test_a_fit_on_the_device_finds_the_hidden_homography_and_its_inliers(seed):
    """16 matches under one homography among 24 random ones: the fit keeps them (within
    4 px), and its model is theirs, where they are and beyond (the frame's corners)."""
    points_a, points_b = hidden_inliers(seed)
    truly = np.linalg.norm(projected(HOMOGRAPHY, points_a) - points_b, axis=1) < 2.5
    (homography, inlier), = best_homographies([points_a], [points_b])
    assert inlier.shape == (40,) and inlier[truly].all() and inlier.sum() <= truly.sum() + 1
    errors = np.linalg.norm(projected(homography, points_a[truly]) - points_b[truly], axis=1)
    assert errors.mean() < 0.8
    corners = np.float64([[0, 0], [500, 0], [500, 500], [0, 500]])
    assert np.abs(projected(homography, corners) - projected(HOMOGRAPHY, corners)).max() < 5


def test_the_fit_prefers_the_model_its_matches_fit_closely():
    """40 matches within 0.3 px of one homography against 60 lying 3–3.9 px off another
    (the first moved 12 px): counted within the fit's 4 px the loose ones win; MSAC's
    truncated cost (within 3 px) picks the model the close ones fit, as USAC_MAGSAC does."""
    rng = np.random.default_rng(5)
    close_a = rng.uniform(0, 500, (40, 2))
    close_b = projected(HOMOGRAPHY, close_a) + rng.normal(0, 0.15, (40, 2))
    loose_a = rng.uniform(0, 500, (60, 2))
    angle = rng.uniform(0, 2 * np.pi, 60)
    loose_b = (projected(HOMOGRAPHY, loose_a) + [12.0, 0.0]
               + rng.uniform(3.0, 3.9, (60, 1)) * np.c_[np.cos(angle), np.sin(angle)])
    points_a, points_b = np.vstack([close_a, loose_a]), np.vstack([close_b, loose_b])
    (homography, inlier), = best_homographies([points_a], [points_b])
    assert inlier[:40].all() and not inlier[40:].any()
    assert np.abs(projected(homography, close_a) - close_b).max() < 1.5


def test_device_fits_keep_pairs_apart_and_leave_too_few_matches_unfitted():
    pairs = [hidden_inliers(seed, inliers=12 + 4 * seed, outliers=10 + 5 * seed) for seed in range(5)]
    three_a, three_b = hidden_inliers(0, inliers=3, outliers=0)
    points_a, points_b = [three_a] + [a for a, _ in pairs], [three_b] + [b for _, b in pairs]
    together = best_homographies(points_a, points_b)
    alone = best_homographies(points_a, points_b, elements_per_pass=1)
    assert together[0][0] is None and not together[0][1].any() and len(together[0][1]) == 3
    for (h_together, in_together), (h_alone, in_alone), found in zip(together[1:], alone[1:], pairs):
        np.testing.assert_array_equal(in_together, in_alone)
        np.testing.assert_allclose(h_together, h_alone, rtol=1e-9, atol=1e-12)
        assert in_together.shape == (len(found[0]),)


def test_fits_on_the_device_are_decided_as_the_host_decides_them(samples, monkeypatch):
    """ORB's slice with its fits found on the device (PyTorch's CPU here): no host fit,
    every pair decided as USAC_MAGSAC's fits decide it, the pairs passing by inliers
    measured for coverage and pixel agreement on the host."""
    import dedup_assets.vision.verify as verify

    names = ["astronaut", "astronaut_crop", "astronaut_left", "astronaut_right", "astronaut_faded", "coffee",
             "coffee_captioned", "chelsea_captioned", "coffee_as_astronaut_colours"]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    fits = []
    original_fit = verify.fit_homography
    monkeypatch.setattr(verify, "fit_homography", lambda *args, **kwargs: fits.append(1) or original_fit(*args, **kwargs))

    def verified(on_device: bool):
        verifier = OrbVerifier(device="cpu")
        verifier.screen_device, verifier.fits_on_device = ("cpu", True) if on_device else (None, False)
        prepared = {name: verifier.prepare(samples[name]) for name in names}
        fits.clear()
        return verifier.verify_many([(prepared[a], prepared[b]) for a, b in pairs]), len(fits)

    host, host_fits = verified(False)
    device, device_fits = verified(True)
    policy = CascadePolicy()
    decisions = [[decide(99, 99.0, 0.0, False, False, r, policy).is_duplicate for r in results]
                 for results in (host, device)]
    assert decisions[0] == decisions[1] and sum(decisions[0]) >= 4
    assert host_fits > 0 and device_fits == 0
    for on_host, on_device, duplicate in zip(host, device, decisions[1]):
        if on_device.method == "device":
            reason = decide(99, 99.0, 0.0, False, False, on_device, policy).reason
            assert reason.startswith(f"{on_device.inliers} inliers (fitted on the device)")  # said in the gallery
            assert "fitted on the device" not in decide(99, 99.0, 0.0, False, False, on_host, policy).reason
            assert on_device.matches == on_host.matches
            if duplicate:
                assert abs(on_device.inliers - on_host.inliers) <= 0.1 * on_host.inliers
                assert on_device.agreement > policy.min_agreement and on_device.min_coverage > policy.min_coverage
    assert sum(r.method == "device" for r in device) >= 10


def test_the_screen_runs_only_on_a_gpu_and_can_be_turned_off():
    assert OrbVerifier().screen_device is None and OrbVerifier(device="cpu").screen_device is None
    assert OrbVerifier(device="cuda").screen_device == "cuda"
    assert load_verifier("orb", device="cpu", screen_fits=True).screen_device is None
    assert not load_verifier("orb", device="cpu").fits_on_device  # nor do fits leave the host
    checked_here = load_verifier("orb", device="cpu", screen_device="cpu")  # to check their decisions without a GPU
    assert checked_here.screen_device == "cpu" and checked_here.fits_on_device and checked_here.device is None
    assert not load_verifier("orb", device="cpu", screen_device="cpu", device_fits=False).fits_on_device
    assert load_verifier("orb", device="cpu", screen_device="cpu", screen_fits=False).screen_device is None
    if torch.cuda.is_available():
        assert load_verifier("orb", device="cuda").screen_device == "cuda"
        assert load_verifier("orb", device="cuda").fits_on_device
        assert not load_verifier("orb", device="cuda", device_fits=False).fits_on_device
        assert load_verifier("orb", device="cuda", screen_fits=False).screen_device is None
