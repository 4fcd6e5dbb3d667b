from dedup_assets.vision.clustering import (FIDELITY_TIE, Image, fidelity, pick_representative, quality_score,
                                           star_clusters)
from dedup_assets.vision.decode import PALETTE_QUALITY


def image(name, pixels=1_000_000, quality=0.95, age=0, part=False, colour=True):
    return Image(name, pixels, quality, quality_score(pixels, "JPEG", int(quality * 100), 100, pixels // 4),
                 age, part, colour)


def test_a_chain_does_not_merge_two_non_duplicates():
    # A~B and B~C, but A and C are not duplicates: A and C must not share a group.
    images = [image("A", age=0), image("B", age=1), image("C", age=2)]
    groups = star_clusters(images, [("A", "B"), ("B", "C")])
    group_of = {member: rep for rep, members in groups for member in members}
    assert group_of["A"] != group_of["C"]
    assert sorted(len(m) for _, m in groups) == [1, 2]


def test_every_member_is_a_verified_duplicate_of_its_representative():
    images = [image(n, age=i) for i, n in enumerate("ABCDE")]
    pairs = [("A", "B"), ("A", "C"), ("C", "D"), ("D", "E")]
    for representative, members in star_clusters(images, pairs):
        for member in members:
            if member != representative:
                assert (representative, member) in pairs or (member, representative) in pairs


def test_singletons_are_groups_of_one():
    groups = star_clusters([image("solo"), image("A"), image("B")], [("A", "B")])
    assert ("solo", ["solo"]) in groups


def test_the_representative_is_the_best_copy():
    original = image("original", pixels=4_000_000, quality=0.95, age=0)
    resized = image("resized", pixels=1_000_000, quality=0.95, age=1)
    recompressed = image("recompressed", pixels=4_000_000, quality=0.35, age=2)
    cropped = image("cropped", pixels=4_100_000, quality=0.95, age=3, part=True)
    assert pick_representative([resized, recompressed, cropped, original]).name == "original"
    # Equal resolution and fidelity: the older copy (the original) is kept.
    resaved = image("resaved", pixels=4_000_000, quality=0.94, age=5)
    assert pick_representative([resaved, original]).name == "original"
    # A larger, newer copy wins over a smaller original.
    upscaled = image("bigger", pixels=9_000_000, quality=0.95, age=9)
    assert pick_representative([original, upscaled]).name == "bigger"


def test_lossless_copies_of_a_jpeg_gain_nothing_over_it():
    assert fidelity("PNG", None) == fidelity("JPEG", 95)
    assert fidelity("WEBP", 100) == fidelity("PNG", None)  # a lossless WebP
    assert fidelity("WEBP", None) < fidelity("JPEG", 90)  # quality not readable (an animation)


def test_a_coarser_webp_copy_is_not_kept_over_its_jpeg_original():
    # Read from the file, not assumed: a CDN's WebP at quality 50 of a quality-75 JPEG.
    original = Image("original.jpg", 1_000_000, fidelity("JPEG", 75), 0.0, age_rank=0)
    webp_copy = Image("copy.webp", 1_000_000, fidelity("WEBP", 50), 0.0, age_rank=1)
    assert pick_representative([webp_copy, original]).name == "original.jpg"


def test_a_camera_raw_is_kept_over_every_rendering_of_it():
    # A raw file and the camera's JPEG are stored in the same second at one size: the
    # raw, read as the TIFF preview inside a DNG, had been dropped for its own JPEG.
    raw = Image("IMG_0001.dng", 24_000_000, fidelity("RAW", None), 0.0, age_rank=1)
    for rendering in [("IMG_0001.jpg", "JPEG", 100), ("IMG_0001.tif", "TIFF", None), ("IMG_0001.png", "PNG", None)]:
        name, fmt, quality = rendering
        assert pick_representative([Image(name, 24_000_000, fidelity(fmt, quality), 0.0, age_rank=0), raw]).name == raw.name


def test_a_palette_copy_is_not_kept_over_its_truecolour_original():
    # A "PNG-8" export of a photo is lossless only for the 256 colours it kept.
    png8 = fidelity("PNG", PALETTE_QUALITY)
    assert png8 < fidelity("PNG", None) - FIDELITY_TIE
    original = Image("original.png", 1_000_000, fidelity("PNG", None), 0.0, age_rank=1)
    assert pick_representative([Image("export.png", 1_000_000, png8, 0.0, age_rank=0), original]).name == "original.png"
    # Beside a quality-90 JPEG original it ties on fidelity, so the older copy is kept.
    jpeg = Image("original.jpg", 1_000_000, fidelity("JPEG", 90), 0.0, age_rank=0)
    assert pick_representative([Image("export.gif", 1_000_000, fidelity("GIF", PALETTE_QUALITY), 0.0, age_rank=1),
                                jpeg]).name == "original.jpg"


def test_fidelity_is_compared_only_between_copies_that_agree_on_colour():
    # A grayscale copy saved at a higher quality is not a better copy of a colour photo.
    original = image("original", quality=0.75, age=0)
    grayscale = image("grayscale", quality=0.95, age=1, colour=False)
    assert pick_representative([grayscale, original]).name == "original"
    # Nor is a colour edit (a tint, a caption in colour) of a grayscale photo.
    gray_original = image("gray original", quality=0.75, age=0, colour=False)
    tinted = image("tinted", quality=0.95, age=1)
    assert pick_representative([tinted, gray_original]).name == "gray original"
    # Within each side fidelity still decides, whatever the other side holds: the
    # lossless grayscale copy beats the older grayscale JPEG, as without the colour edit.
    gray_resave = image("gray resave", quality=0.95, age=1, colour=False)
    edit = image("colour edit", quality=0.95, age=2)
    assert pick_representative([gray_original, gray_resave]).name == "gray resave"
    assert pick_representative([gray_original, gray_resave, edit]).name == "gray resave"
    # Copies as old as each other: the one with colour.
    assert pick_representative([image("gray", quality=0.95, colour=False), image("colour", quality=0.75)]).name == "colour"
    # Resolution still comes first.
    large_gray = image("large gray", pixels=4_000_000, quality=0.95, age=1, colour=False)
    assert pick_representative([original, large_gray]).name == "large gray"


def stored_together(name, centrality, colour=True, sharpness=100.0, fidelity_=0.95, size=100_000):
    """A copy uploaded with the others in one go: no age to tell them apart."""
    return Image(name, 1_000_000, fidelity_, 0.0, 0, False, colour, centrality, size, sharpness)


def test_of_copies_stored_together_the_one_the_others_resemble_most_is_kept():
    # Each edit is a step from the original, two edits two steps from each other.
    original = stored_together("original", 0.92, sharpness=100.0)
    brightened = stored_together("brightened", 0.86, sharpness=225.0)  # more contrast reads sharper
    captioned = stored_together("captioned", 0.84)
    assert pick_representative([brightened, captioned, original]).name == "original"
    # A grayscale photo is not outranked by its copy with a coloured caption.
    gray_photo = stored_together("gray photo", 0.90, colour=False)
    coloured_caption = stored_together("coloured caption", 0.83)
    assert pick_representative([coloured_caption, gray_photo]).name == "gray photo"
    # Resembling each other equally (two copies alone), colour decides as before.
    assert pick_representative([stored_together("gray copy", 0.9, colour=False),
                                stored_together("colour", 0.9)]).name == "colour"


def test_of_equal_copies_a_blur_loses_and_the_smaller_file_of_one_picture_is_kept():
    sharp, blurred = stored_together("sharp", 0.9, sharpness=120.0), stored_together("blurred", 0.9, sharpness=12.0, size=40_000)
    assert pick_representative([blurred, sharp]).name == "sharp"
    # A PNG of a JPEG: the same picture (its sharpness differs only by decode path), 4x the bytes.
    jpeg = stored_together("photo.jpg", 0.9, sharpness=31.5, fidelity_=fidelity("JPEG", 95), size=82_518)
    png = stored_together("photo.png", 0.9, sharpness=55.0, fidelity_=fidelity("PNG", None), size=513_607)
    assert pick_representative([png, jpeg]).name == "photo.jpg"
    # Equally faithful within the tie, the finer setting first: a q95 original over its q93 re-save.
    resave = stored_together("resave", 0.9, fidelity_=fidelity("JPEG", 93), size=90_000)
    assert pick_representative([resave, stored_together("q95", 0.9, fidelity_=fidelity("JPEG", 95))]).name == "q95"


def test_byte_identical_copies_are_one_node_of_the_graph():
    # C1, C2, C3 hold one content; only C1 was verified against B, and B against X, not X against C.
    images = [image("C2", age=0), image("C1", age=1), image("C3", age=2), image("B", pixels=500_000, age=3),
              image("X", pixels=500_000, age=4)]
    node_of = {"C1": "c", "C2": "c", "C3": "c", "B": "b", "X": "x"}
    groups = dict(star_clusters(images, [("c", "b"), ("b", "x")], node_of))
    # The oldest copy is kept; every copy of its content, and what its content was verified against, join it.
    assert groups == {"C2": ["C2", "B", "C1", "C3"], "X": ["X"]}
