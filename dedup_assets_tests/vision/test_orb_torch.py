import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dedup_assets.vision.cascade import CascadePolicy, decide  # noqa: E402
from dedup_assets.vision.hamming import ratio_test  # noqa: E402
from dedup_assets.vision.orb_torch import BORDER, _fast_corners, describe_batch, features_per_level  # noqa: E402
from dedup_assets.vision.verify import (OrbVerifier, TorchOrbVerifier, equalised_contrast, fit_homography,  # noqa: E402
                                        load_verifier)


def test_keypoints_are_shared_across_the_pyramid_as_orbs_are():
    assert features_per_level(1000) == [217, 181, 151, 126, 105, 87, 73, 60]
    assert sum(features_per_level(500)) == 500 and features_per_level(0) == [0] * 8


def test_fast_finds_the_corners_of_a_square_not_its_edges_or_its_inside():
    image = torch.zeros(1, 1, 60, 60)
    image[..., 20:40, 20:40] = 200.0
    corners = _fast_corners(image, 10)[0, 0].nonzero().tolist()
    assert corners and all(min(abs(y - cy) + abs(x - cx) for cy in (20, 39) for cx in (20, 39)) <= 2
                           for y, x in corners)
    assert not _fast_corners(image, 250).any()  # no pixel differs by more than the threshold


def test_an_images_features_do_not_depend_on_what_shares_its_pass(samples):
    grays = [equalised_contrast(cv2.cvtColor(samples[name], cv2.COLOR_RGB2GRAY))
             for name in ("astronaut", "coffee_captioned", "chelsea_captioned")]
    grays[1] = cv2.resize(grays[1], (300, 260))  # a smaller image, padded in the pass
    together = describe_batch(grays, "cpu", features=500)
    for gray, (keypoints, descriptors) in zip(grays, together):
        alone_keypoints, alone_descriptors = describe_batch([gray], "cpu", features=500)[0]
        assert np.array_equal(keypoints, alone_keypoints) and np.array_equal(descriptors, alone_descriptors)
        assert 100 < len(keypoints) <= 500 and descriptors.shape == (len(keypoints), 32)
        assert descriptors.dtype == np.uint8 and keypoints.dtype == np.float32
        height, width = gray.shape
        assert (keypoints >= BORDER - 1).all() and (keypoints[:, 0] < width - BORDER + 1).all()
        assert (keypoints[:, 1] < height - BORDER + 1).all()


def test_a_flat_image_has_no_features():
    keypoints, descriptors = describe_batch([np.full((200, 300), 128, np.uint8)], "cpu")[0]
    assert keypoints.shape == (0, 2) and descriptors.shape == (0, 32)
    assert describe_batch([], "cpu") == []


@pytest.mark.parametrize("degrees", [0, 25, 90])
def test_steered_descriptors_match_a_rotated_and_rescaled_copy(samples, degrees):
    """The orientation steers the tests and the pyramid spans scales: a copy turned by
    `degrees` and shrunk to 80 % is matched through the ratio test, and its homography
    recovered, as OpenCV's ORB does."""
    gray = cv2.cvtColor(samples["astronaut"], cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 0.8)
    turned = cv2.warpAffine(gray, turn, (width, height), borderMode=cv2.BORDER_REFLECT)
    (points_a, descriptors_a), (points_b, descriptors_b) = describe_batch(
        [equalised_contrast(gray), equalised_contrast(turned)], "cpu")
    query, train = ratio_test(descriptors_a, descriptors_b, 0.8)
    result = fit_homography(points_a[query].reshape(-1, 1, 2), points_b[train].reshape(-1, 1, 2),
                            gray.shape, turned.shape)
    assert result.inliers >= 60, (len(query), result.inliers)
    # The inliers move as the rotation does.
    moved = cv2.transform(points_a[query].reshape(-1, 1, 2), turn).reshape(-1, 2)
    assert np.median(np.linalg.norm(moved - points_b[train], axis=1)) < 2.0


def test_torch_orb_verifies_as_orb_does(samples):
    """Its own features, the same decisions on the sample pairs as OpenCV's ORB; pairs
    verified many at once equal pairs verified alone."""
    verifier = load_verifier("torch-orb", device="cpu")
    assert isinstance(verifier, TorchOrbVerifier) and verifier.batches_pairs and not verifier.describes_on_host
    assert verifier.features_key != OrbVerifier().features_key
    names = ["astronaut", "astronaut_crop", "astronaut_left", "astronaut_right", "coffee", "coffee_captioned",
             "chelsea_captioned", "coffee_as_astronaut_colours"]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    prepared = {name: verifier.prepare(samples[name]) for name in names}
    together = verifier.verify_many([(prepared[a], prepared[b]) for a, b in pairs])
    assert together == [verifier.verify(samples[a], samples[b]) for a, b in pairs]
    policy = CascadePolicy()
    duplicates = {pair for pair, result in zip(pairs, together)
                  if decide(99, 99.0, 0.0, False, False, result, policy).is_duplicate}
    orb = OrbVerifier()
    assert duplicates == {pair for pair in pairs
                          if decide(99, 99.0, 0.0, False, False, orb.verify(samples[pair[0]], samples[pair[1]]),
                                    policy).is_duplicate}
    assert ("astronaut", "astronaut_crop") in duplicates and ("coffee", "coffee_captioned") in duplicates
    # Stored and read back as ORB's features are.
    stored = OrbVerifier.decode_features(OrbVerifier.encode_features(prepared["coffee"]), load=lambda: None)
    assert np.array_equal(stored.features[1], prepared["coffee"].features[1])
