import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dedup_assets.demo_data import distinct_image
from dedup_assets.vision.borders import picture_box
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.features import extract_features
from dedup_assets.vision.hashing import hamming
from dedup_assets_tests.vision.conftest import thumbnail


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def padded(photo: Image.Image, size: tuple[int, int], colour=(255, 255, 255)) -> Image.Image:
    canvas = Image.new("RGB", size, colour)
    canvas.paste(photo, ((size[0] - photo.width) // 2, (size[1] - photo.height) // 2))
    return canvas


@pytest.mark.parametrize("name, size, colour", [
    ("chelsea", (551, 551), (255, 255, 255)),  # padded to a square, white
    ("coffee", (600, 560), (0, 0, 0)),  # letterboxed: black bars above and below
    ("astronaut", (700, 512), (40, 40, 40)),  # pillarboxed, dark grey
])
def test_the_picture_is_found_inside_bars_on_opposite_sides(photos, name, size, colour):
    photo = photos[name]
    pixels = thumbnail(padded(photo, size, colour))
    box = picture_box(pixels)
    scale = pixels.shape[1] / size[0]
    expected = ((size[1] - photo.height) // 2 * scale, ((size[1] - photo.height) // 2 + photo.height) * scale,
                (size[0] - photo.width) // 2 * scale, ((size[0] - photo.width) // 2 + photo.width) * scale)
    assert np.allclose(box, expected, atol=3), (box, expected)


def test_a_photo_without_bars_is_whole(photos):
    for photo in photos.values():
        pixels = thumbnail(photo)
        assert picture_box(pixels) == (0, pixels.shape[0], 0, pixels.shape[1])


@pytest.mark.parametrize("make", [
    lambda photo: padded(photo, (photo.width, photo.height + 120)).crop((0, 60, photo.width, photo.height + 120)),
    lambda photo: Image.new("RGB", (400, 300), (90, 140, 200)),  # nothing but one colour
])
def test_one_flat_side_or_a_flat_image_is_not_cut(photos, make):
    # A photo's own flat sky or wall lies on one side: cutting it would change the photo.
    pixels = thumbnail(make(photos["coffee"]))
    assert picture_box(pixels) == (0, pixels.shape[0], 0, pixels.shape[1])


def test_bars_of_two_colours_are_not_padding(photos):
    photo = photos["coffee"]
    canvas = padded(photo, (photo.width, photo.height + 160))
    canvas.paste((0, 0, 0), (0, canvas.height - 80, canvas.width, canvas.height))  # white above, black below
    pixels = thumbnail(canvas)
    assert picture_box(pixels) == (0, pixels.shape[0], 0, pixels.shape[1])


def test_a_padded_copy_hashes_as_its_picture_and_reports_the_pictures_size(photos):
    photo = photos["chelsea"]
    original = extract_features(jpeg(photo))
    square = extract_features(jpeg(padded(photo, (551, 551))))
    assert (square.width, square.height) == (551, 551)
    assert abs(square.picture_width - photo.width) <= 4 and abs(square.picture_height - photo.height) <= 4
    assert (original.picture_width, original.picture_height) == (original.width, original.height)
    assert hamming(original.wavelet_hash, square.wavelet_hash) <= 4


@pytest.mark.parametrize("side", [260, 300, 340, 380])
def test_a_small_jpeg_of_a_padded_picture_has_its_originals_picture(side):
    # Saturated colours ring through the 16 px JPEG block where a bar meets the picture.
    # Judged by colour, two equal bars of a small copy measured up to a block apart (cut
    # on one axis only, the copy's hash no longer matched), and up to 4 % of the side
    # short (the copy's picture looked larger, as though its original were a crop of it).
    for seed in range(6):
        canvas = Image.new("RGB", (800, 800), "white")
        canvas.paste(distinct_image(np.random.default_rng(seed), 440, 440), (180, 180))
        small = io.BytesIO()
        canvas.resize((side, side), Image.Resampling.LANCZOS).save(small, format="JPEG", quality=85)
        pixels = decode_thumbnail(small.getvalue()).thumbnail
        picture = np.array([180, 620, 180, 620]) * pixels.shape[0] / 800
        found = picture_box(pixels)
        assert np.allclose(found, picture, atol=0.01 * pixels.shape[0]), (seed, found, picture)


def product_on_white(seed: int, side: int = 800, share: float = 0.55, drop: float = 0.0) -> Image.Image:
    """A product shot: a picture centred on white (lowered by `drop` of the side)."""
    size = round(side * share)
    shot = Image.new("RGB", (side, side), "white")
    shot.paste(distinct_image(np.random.default_rng(seed), size, size), ((side - size) // 2,
                                                                         (side - size) // 2 + round(drop * side)))
    return shot


def with_caption(shot: Image.Image, at: str = "bottom", touching_edge: bool = False) -> Image.Image:
    """A large caption set in the shot's padding, as a shop or an agency adds one."""
    captioned = shot.copy()
    size = shot.height // 12
    draw = ImageDraw.Draw(captioned)
    y = {"bottom": shot.height - (size + 4 if touching_edge else 2 * size), "top": 4 if touching_edge else size // 2}[at]
    draw.text((shot.width // 20, y), "© dedup demo 2026", fill=(255, 255, 0), font_size=size, stroke_width=2,
              stroke_fill=(0, 0, 0))
    return captioned


@pytest.mark.parametrize("at, touching_edge", [("bottom", False), ("bottom", True), ("top", False)])
def test_a_caption_in_the_padding_is_cut_with_its_bar(at, touching_edge):
    # Judged as whole lines, the caption ended the bar it sits in, and the caption's
    # columns the side bars: the captioned shot was not cut at all, its original was, and
    # the two were never compared (while every product captioned alike matched the others).
    for seed in range(4):
        shot = product_on_white(seed)
        original = picture_box(thumbnail(shot))
        assert original != (0, 400, 0, 400)
        for side in (800, 300):
            pixels = thumbnail(with_caption(shot, at, touching_edge).resize((side, side), Image.Resampling.LANCZOS))
            expected = np.array(original) * pixels.shape[0] / 400
            assert np.allclose(picture_box(pixels), expected, atol=0.01 * pixels.shape[0]), (seed, side)


def test_a_captioned_shot_hashes_as_its_original():
    shot = product_on_white(7)
    original, captioned = extract_features(jpeg(shot)), extract_features(jpeg(with_caption(shot)))
    assert (captioned.picture_width, captioned.picture_height) == (original.picture_width, original.picture_height)
    assert hamming(original.wavelet_hash, captioned.wavelet_hash) <= 4


def test_an_off_centre_shot_keeps_its_caption_as_its_original_keeps_its_margins():
    # Its original's bars above and below differ, so neither is cut there.
    shot = product_on_white(3, drop=0.1)
    original = picture_box(thumbnail(shot))
    assert (original.top, original.bottom) == (0, 400)
    assert picture_box(thumbnail(with_caption(shot)))[:2] == (0, 400)


def test_a_second_picture_filling_the_margin_is_not_an_overlay():
    # Below the picture, as far from the edge as the bar above it, a band of white and a
    # second picture most of the margin high: two pictures, not a picture and its caption.
    canvas = Image.new("RGB", (800, 800), "white")
    canvas.paste(distinct_image(np.random.default_rng(1), 500, 400), (150, 200))
    canvas.paste(distinct_image(np.random.default_rng(2), 600, 140), (100, 640))
    box = picture_box(thumbnail(canvas))
    assert (box.top, box.bottom) == (0, 400), box
