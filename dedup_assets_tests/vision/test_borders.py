import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dedup_assets.demo_data import distinct_image, product_shot
from dedup_assets.vision.borders import Picture, find_picture, picture_box
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
    box = find_picture(pixels).box
    scale = pixels.shape[1] / size[0]
    expected = ((size[1] - photo.height) // 2 * scale, ((size[1] - photo.height) // 2 + photo.height) * scale,
                (size[0] - photo.width) // 2 * scale, ((size[0] - photo.width) // 2 + photo.width) * scale)
    assert np.allclose(box, expected, atol=3), (box, expected)


def test_a_photo_without_bars_is_whole(photos):
    for photo in photos.values():
        pixels = thumbnail(photo)
        assert find_picture(pixels).box == (0, pixels.shape[0], 0, pixels.shape[1])


@pytest.mark.parametrize("make", [
    lambda photo: padded(photo, (photo.width, photo.height + 120)).crop((0, 60, photo.width, photo.height + 120)),
    lambda photo: Image.new("RGB", (400, 300), (90, 140, 200)),  # nothing but one colour
])
def test_one_flat_side_or_a_flat_image_is_not_cut(photos, make):
    # A photo's own flat sky or wall lies on one side: cutting it would change the photo.
    pixels = thumbnail(make(photos["coffee"]))
    assert find_picture(pixels).box == (0, pixels.shape[0], 0, pixels.shape[1])


def test_bars_of_two_colours_are_not_padding(photos):
    photo = photos["coffee"]
    canvas = padded(photo, (photo.width, photo.height + 160))
    canvas.paste((0, 0, 0), (0, canvas.height - 80, canvas.width, canvas.height))  # white above, black below
    pixels = thumbnail(canvas)
    assert find_picture(pixels).box == (0, pixels.shape[0], 0, pixels.shape[1])


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
        found = find_picture(pixels).box
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
    if at == "bottom":
        y = shot.height - (size + 4 if touching_edge else 2 * size)
    else:
        y = 4 if touching_edge else size // 2
    draw.text((shot.width // 20, y), "© dedup demo 2026", fill=(255, 255, 0), font_size=size, stroke_width=2,
              stroke_fill=(0, 0, 0))
    return captioned


def inside(picture: Picture) -> np.ndarray:
    top, bottom, left, right = picture.box
    return picture.pixels[top:bottom, left:right]


@pytest.mark.parametrize("at, touching_edge, drop", [
    ("bottom", False, 0.0), ("bottom", True, 0.0), ("top", False, 0.0),
    ("bottom", False, 0.05),  # off centre: its original is cut left and right only
])
def test_a_caption_in_the_padding_is_painted_over_and_the_picture_cut_as_its_originals(at, touching_edge, drop):
    # Judged as whole lines, the caption ended the bars it crossed: the captioned shot was
    # not cut where its original was, the two were never compared, and every product
    # captioned alike matched the others by the caption.
    for seed in range(4):
        shot = product_on_white(seed, drop=drop)
        original = find_picture(thumbnail(shot))
        assert original.box != (0, 400, 0, 400)
        for side in (800, 300):
            pixels = thumbnail(with_caption(shot, at, touching_edge).resize((side, side), Image.Resampling.LANCZOS))
            found = find_picture(pixels)
            expected = np.array(original.box) * pixels.shape[0] / 400
            assert np.allclose(found.box, expected, atol=0.01 * pixels.shape[0]), (seed, side, found.box, expected)
            # What is left of the caption, inside the picture's box (off centre, the margin
            # below the product), is the padding's white.
            if side == 800:  # what is left of the caption in the box (off centre, below the product): white
                assert np.abs(inside(found).astype(float) - inside(original)).mean() < 1, seed


def test_a_captioned_shot_hashes_as_its_original():
    for drop in (0.0, 0.05):
        shot = product_on_white(7, drop=drop)
        original, captioned = extract_features(jpeg(shot)), extract_features(jpeg(with_caption(shot)))
        assert (captioned.picture_width, captioned.picture_height) == (original.picture_width, original.picture_height)
        assert hamming(original.wavelet_hash, captioned.wavelet_hash) <= 4


def test_a_second_picture_is_not_an_overlay():
    # Two pictures stacked on white, the lower smaller: not a picture and its caption.
    canvas = Image.new("RGB", (800, 800), "white")
    canvas.paste(distinct_image(np.random.default_rng(1), 500, 400), (150, 150))
    canvas.paste(distinct_image(np.random.default_rng(2), 300, 140), (250, 600))
    pixels = thumbnail(canvas)
    found = find_picture(pixels)
    assert found.pixels is pixels and found.box == picture_box(pixels)


def test_a_page_of_text_is_not_painted_over():
    page = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(page)
    draw.text((60, 50), "Quarterly report", fill="black", font_size=40)
    for line in range(20):
        draw.text((60, 140 + 30 * line), "the data of the storage batch and its copies " * 2, fill="black",
                  font_size=18)
    pixels = thumbnail(page)
    assert find_picture(pixels).pixels is pixels


def test_subtitles_in_a_letterbox_are_painted_over(photos):
    photo = photos["coffee"]
    frame = padded(photo, (photo.width, photo.height + 200), (0, 0, 0))
    subtitled = frame.copy()
    ImageDraw.Draw(subtitled).text((photo.width // 6, photo.height + 130), "Where did you put the coffee?",
                                   fill=(255, 255, 255), font_size=36)
    original, found = find_picture(thumbnail(frame)), find_picture(thumbnail(subtitled))
    assert original.box != (0, *original.pixels.shape[:1], 0, original.pixels.shape[1])
    assert np.allclose(found.box, original.box, atol=2), (found.box, original.box)


def test_an_object_on_white_is_its_picture_however_framed():
    # Off centre, its margins above and below differ: as bars they never paired up, so a
    # copy cropped into the white (its picture then larger than the original's) was kept
    # over its original, taken for a crop of it. Cropped into the object on one side, the
    # white reaches three edges.
    shot = product_on_white(5, drop=0.1)  # the object at x 180-620, y 260-700
    original = find_picture(thumbnail(shot))
    assert (original.box.top, original.box.bottom) != (0, 400)
    for crop_box in ((40, 0, 800, 760), (0, 90, 700, 800), (100, 100, 760, 800), (0, 0, 800, 600)):
        cropped = shot.crop(crop_box)
        pixels = thumbnail(cropped)
        scale = pixels.shape[0] / cropped.height
        found = find_picture(pixels).box
        width, height = (found.right - found.left) / scale, (found.bottom - found.top) / scale
        expected = min(620, crop_box[2]) - max(180, crop_box[0]), min(700, crop_box[3]) - max(260, crop_box[1])
        assert abs(width - expected[0]) <= 6 and abs(height - expected[1]) <= 6, (crop_box, found)


def test_two_products_in_one_framing_hash_as_themselves(photos):
    # Off centre, the frame was hashed whole and its outline set the bits: coins and moon
    # in one rounded box hashed 4 bits apart. Cut to the object, 26.
    first, second = (extract_features(jpeg(product_shot(photos[name], "rounded", 0.7, 0.05, 800)))
                     for name in ("coins", "moon"))
    assert hamming(first.wavelet_hash, second.wavelet_hash) > 10
