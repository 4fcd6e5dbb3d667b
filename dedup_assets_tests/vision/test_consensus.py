import numpy as np
import pytest
import torch

from dedup_assets.vision.cascade import CascadePolicy, decide
from dedup_assets.vision.consensus import _distinct_draws, most_consistent, screen_rejects
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


def test_the_screen_runs_only_on_a_gpu_and_can_be_turned_off():
    assert OrbVerifier().screen_device is None and OrbVerifier(device="cpu").screen_device is None
    assert OrbVerifier(device="cuda").screen_device == "cuda"
    assert load_verifier("orb", device="cpu", screen_fits=True).screen_device is None
    if torch.cuda.is_available():
        assert load_verifier("orb", device="cuda").screen_device == "cuda"
        assert load_verifier("orb", device="cuda", screen_fits=False).screen_device is None
