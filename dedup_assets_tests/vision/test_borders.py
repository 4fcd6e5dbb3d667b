import io

import numpy as np
import pytest
from PIL import Image

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
