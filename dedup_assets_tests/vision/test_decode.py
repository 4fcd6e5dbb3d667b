import io
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from dedup_assets.demo_data import shipped_photos
from dedup_assets.vision.decode import (MAX_PIXELS, PALETTE_QUALITY, THUMBNAIL_SIDE, DecodeError,
                                       decode_thumbnail, opencv_single_threaded)
from dedup_assets.vision.quality import sharpness
from dedup_assets_tests.vision.conftest import encode


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return shipped_photos()["astronaut"]


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_is_estimated_from_the_quantisation_tables(photo, quality):
    assert abs(decode_thumbnail(encode(photo, quality=quality)).jpeg_quality - quality) <= 2


@pytest.mark.parametrize("fmt, convert, quality", [
    ("PNG", lambda im: im, None),  # truecolour lossless: no estimate needed
    ("PNG", lambda im: im.quantize(256), PALETTE_QUALITY),  # a "PNG-8" export of a photo
    ("GIF", lambda im: im, PALETTE_QUALITY),
    ("GIF", lambda im: im.convert("L"), 100),  # 256 grey levels hold a grayscale photo exactly
])
def test_a_palette_is_ranked_as_a_measured_jpeg_quality(photo, fmt, convert, quality):
    assert decode_thumbnail(encode(convert(photo), fmt)).jpeg_quality == quality


def test_thumbnail_is_small_and_original_size_is_kept(photo):
    big = photo.resize((1200, 1200))
    decoded = decode_thumbnail(encode(big, quality=90))
    assert (decoded.width, decoded.height) == (1200, 1200)
    assert THUMBNAIL_SIDE <= max(decoded.thumbnail.shape[:2]) < 2 * THUMBNAIL_SIDE
    assert decoded.format == "JPEG"


def test_a_png_copy_of_a_jpeg_is_reduced_as_the_jpeg_is(photo):
    # Same pixels, same thumbnail: its sharpness and embedding then rank it as the JPEG.
    jpeg = encode(photo.resize((800, 800)), quality=95)
    png = encode(Image.open(io.BytesIO(jpeg)), "PNG")
    from_jpeg, from_png = decode_thumbnail(jpeg).thumbnail, decode_thumbnail(png).thumbnail
    assert from_jpeg.shape == from_png.shape == (400, 400, 3)
    gray = [cv2.cvtColor(t, cv2.COLOR_RGB2GRAY) for t in (from_jpeg, from_png)]
    assert sharpness(gray[1]) == pytest.approx(sharpness(gray[0]), rel=0.05)


def test_exif_orientation_is_applied(photo):
    wide = photo.resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90° clockwise
    decoded = decode_thumbnail(encode(wide, exif=exif.tobytes()))
    assert (decoded.width, decoded.height) == (200, 400)
    assert decoded.thumbnail.shape[0] > decoded.thumbnail.shape[1]


def test_a_jpeg_carrying_more_pictures_is_decoded_and_measured_as_a_jpeg(photo):
    # Cameras store a large preview after the photo, phones an HDR gain map or a depth
    # map (the Multi-Picture Format); Pillow opens such a file as "MPO". It had no quality
    # estimate (ranked below a re-saved copy at quality 85) and was decoded whole (4.5x).
    big = photo.resize((2000, 2000))
    plain = decode_thumbnail(encode(big, quality=95))
    with_preview = decode_thumbnail(encode(big, "MPO", quality=95, save_all=True,
                                           append_images=[big.resize((640, 640))]))
    assert (with_preview.format, with_preview.jpeg_quality) == ("JPEG", plain.jpeg_quality)
    assert (with_preview.width, with_preview.height) == (2000, 2000)
    assert np.array_equal(with_preview.thumbnail, plain.thumbnail)


def _fade_in(picture: Image.Image, fmt: str) -> bytes:
    frames = [ImageEnhance.Brightness(picture).enhance(step / 9) for step in range(10)] + [picture] * 5
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_an_animation_is_shown_by_a_frame_that_holds_its_picture(photo, fmt):
    # A banner fading in from black: its first frame showed nothing, so every such
    # animation looked alike, and none like its own WebP copy.
    picture = photo.resize((480, 360))
    decoded = decode_thumbnail(_fade_in(picture, fmt))
    still = decode_thumbnail(encode(picture, quality=95)).thumbnail
    assert decoded.multi_picture and _correlation(decoded.thumbnail, still) > 0.95  # a frame of the fade: darker
    # An animation whose first frame is its picture is shown by that frame.
    sliding = [picture] + [picture.rotate(angle) for angle in (10, 20, 30)]
    first = decode_thumbnail(encode(sliding[0], fmt, save_all=True, append_images=sliding[1:], duration=80))
    assert np.abs(first.thumbnail.astype(float) - still).mean() < 12
    assert not decode_thumbnail(encode(picture, fmt)).multi_picture


def test_a_tiff_of_several_pages_is_told_from_one_with_reduced_copies(photo):
    pages = [photo.resize((400, 300)), photo.resize((400, 300)).rotate(90)]
    document = decode_thumbnail(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert document.multi_picture and (document.width, document.height) == (400, 300)  # its first page
    assert not decode_thumbnail(encode(pages[0], "TIFF")).multi_picture
    # A first page and its thumbnail (NewSubfileType 1), as scanners and cameras store one.
    import tifffile

    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tiff:
        tiff.write(np.asarray(pages[0]), photometric="rgb")
        tiff.write(np.asarray(pages[0].resize((100, 75))), photometric="rgb", subfiletype=1)
    assert not decode_thumbnail(buffer.getvalue()).multi_picture
    # Pages Pillow cannot read (floating point) are counted by tifffile.
    floating = np.asarray(pages[0], dtype=np.float32) / 255
    assert decode_thumbnail(_tiff(np.stack([floating, floating]), photometric="rgb")).multi_picture


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_a_file_cut_after_its_first_picture_still_decodes_from_what_is_there(photo, fmt):
    # Its later frames or pages are examined now: a damaged one must not fail the file.
    picture = photo.resize((480, 360))
    blank = Image.new("RGB", picture.size)  # (a fade-in's first frame: the next ones are examined)
    data = encode(blank, fmt, save_all=True, append_images=[picture, picture.rotate(90), picture.rotate(180)])
    cut = decode_thumbnail(data[:len(data) * 2 // 3])
    assert cut.thumbnail.std() > 10 if fmt == "GIF" else cut.thumbnail.max() == 0  # a TIFF shows its first page


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.mean(axis=2).ravel(), b.mean(axis=2).ravel())[0, 1])


def _tiff(array: np.ndarray, **options) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _same_picture(decoded, reference) -> bool:
    return decoded.thumbnail.shape == reference.thumbnail.shape and \
        np.abs(decoded.thumbnail.astype(int) - reference.thumbnail).mean() < 3


@pytest.mark.parametrize("depth", ["float32 grey", "float32 colour", "float32 colour, planar",
                                   "float64 colour with alpha", "float32 colour in scene units"])
def test_a_floating_point_tiff_decodes_as_its_8_bit_picture(photo, depth):
    """An HDR merge or a 32-bit export: Pillow reads floating-point grey as values 0-1 it then
    clipped (a black frame, which matched every other such file by hash) and refuses
    floating-point colour; both decode now, and compare with the picture's JPEG."""
    rgb = np.asarray(photo.resize((600, 400))).astype(np.float64) / 255
    if depth == "float32 grey":
        samples = rgb[..., 1].astype(np.float32)
        reference = Image.fromarray(np.asarray(photo.resize((600, 400)))[..., 1])
    else:
        samples, reference = rgb.astype(np.float32), photo.resize((600, 400))
    options = {"planarconfig": "separate"} if "planar" in depth else {}
    if "alpha" in depth:
        samples = np.dstack([rgb, np.ones(rgb.shape[:2])])
        options = {"extrasamples": ["unassalpha"]}
    if "scene units" in depth:
        samples = samples * 40.0
    if "planar" in depth:
        samples = np.moveaxis(samples, -1, 0)  # one plane per colour
    decoded = decode_thumbnail(_tiff(samples, photometric="minisblack" if samples.ndim == 2 else "rgb", **options))
    assert (decoded.format, decoded.width, decoded.height) == ("TIFF", 600, 400)
    assert _same_picture(decoded, decode_thumbnail(encode(reference, "PNG")))


@pytest.mark.parametrize("store", ["16-bit PNG", "16-bit colour TIFF", "float TIFF 0-1"])
def test_a_dark_photo_stays_as_dark_at_any_depth(photo, store):
    """Samples are shown on their format's scale, not stretched to the brightest: a night
    shot's 16-bit copy had decoded 3x brighter than its JPEG and was missed as its copy."""
    dark = (np.asarray(photo.resize((600, 400))).astype(np.float64) * 0.35).astype(np.uint8)
    if store == "16-bit PNG":
        data = encode(Image.fromarray(dark[..., 1].astype(np.uint16) * 257), "PNG")
        reference = encode(Image.fromarray(dark[..., 1]), "PNG")
    else:
        samples = dark.astype(np.uint16) * 257 if store.startswith("16") else dark.astype(np.float32) / 255
        data, reference = _tiff(samples, photometric="rgb"), encode(Image.fromarray(dark), "PNG")
    assert _same_picture(decode_thumbnail(data), decode_thumbnail(reference))


@pytest.mark.parametrize("depth", [np.uint16, np.int32, np.float32])
def test_deep_grey_is_reduced_as_its_8_bit_copy_is(photo, depth):
    """Reduced before it is made 8-bit (no full-size floating-point copy of a large scan),
    to the same thumbnail as its 8-bit copy."""
    grey = np.asarray(photo.convert("L").resize((2400, 1600)))
    scale = {np.uint16: 257, np.int32: 257, np.float32: 1 / 255}[depth]
    deep = (grey.astype(np.float64) * scale).astype(depth)
    data = encode(Image.fromarray(deep), "PNG") if depth == np.uint16 else _tiff(deep, photometric="minisblack")
    decoded, reference = decode_thumbnail(data), decode_thumbnail(encode(Image.fromarray(grey), "PNG"))
    assert decoded.thumbnail.shape == reference.thumbnail.shape == (200, 300, 3)  # 2,400 px by 8
    assert _same_picture(decoded, reference)


def test_a_tiff_of_other_samples_than_grey_or_rgb_is_refused_by_name_not_misread():
    # Four float samples of CMYK would otherwise be taken for RGB and alpha.
    data = _tiff(np.ones((64, 64, 4), dtype=np.float32), photometric="separated")
    with pytest.raises(DecodeError, match="photometric interpretation SEPARATED is not read here"):
        decode_thumbnail(data)


def test_grey_stored_inverted_decodes_the_right_way_round(photo):
    # (64-bit samples: Pillow reads none, so tifffile reads them.)
    grey = np.asarray(photo.convert("L").resize((300, 200))).astype(np.float64) / 255
    inverted = decode_thumbnail(_tiff(1 - grey, photometric="miniswhite"))
    assert _same_picture(inverted, decode_thumbnail(encode(Image.fromarray((grey * 255).astype(np.uint8)), "PNG")))


def test_a_tiff_neither_reader_decodes_says_it_is_a_tiff():
    data = _tiff(np.ones((64, 64, 3), dtype=np.float32), photometric="rgb")
    with pytest.raises(DecodeError, match=r"TIFF not decodable \(Pillow does not read its samples; tifffile: "):
        decode_thumbnail(data[:200])


def test_a_tiff_read_by_tifffile_is_turned_upright(photo):
    samples = np.asarray(photo.resize((400, 200))).astype(np.float32) / 255
    decoded = decode_thumbnail(_tiff(samples, photometric="rgb", extratags=[(274, "H", 1, 6, True)]))
    assert (decoded.width, decoded.height) == (200, 400)
    assert decoded.thumbnail.shape[0] > decoded.thumbnail.shape[1]


def test_transparent_png_is_composited_on_white():
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    decoded = decode_thumbnail(encode(rgba, "PNG"))
    assert decoded.thumbnail.min() == 255


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"<html><body>403 Forbidden</body></html>", "not a recognised image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "unreadable|corrupt|not a recognised"),
    ],
)
def test_bad_bytes_raise_a_readable_decode_error(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_thumbnail(data)


MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"


@pytest.mark.parametrize("head, kind", [
    (MP4_HEAD, "an MP4 or QuickTime video"), (b"%PDF-1.7\n", "a PDF document"),
    (b"PK\x03\x04\x14\x00", "a ZIP archive or Office document"), (b"\x1aE\xdf\xa3\x01", "a Matroska or WebM video"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG drawing"),
    (b"\xff\x0a\xfa\x7f\x01\x90", "a JPEG XL image"), (b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00", "a JPEG XL image"),
])
def test_a_file_that_is_not_an_image_is_named_from_its_first_bytes(head, kind):
    from dedup_assets.vision.decode import header_problem

    data = head + np.random.default_rng(0).bytes(70_000)
    assert header_problem(data[:65536]).startswith(f"not a recognised image format (it looks like {kind}")
    with pytest.raises(DecodeError, match=kind):
        decode_thumbnail(data)


def test_the_head_of_an_image_is_never_taken_for_something_else(photo):
    """An image header can reach past the head read (a JPEG's ICC profile, a TIFF's
    directory at its end): then its signature decides. A bomb is told from its head."""
    from dedup_assets.vision.decode import header_problem

    large_profile = encode(photo, "JPEG", icc_profile=np.random.default_rng(1).bytes(200_000))
    directory_at_end = encode(Image.new("RGB", (3000, 2000)), "TIFF")
    assert len(large_profile) > 65536 and len(directory_at_end) > 65536
    for data in (large_profile, directory_at_end, encode(photo, "PNG"), encode(photo, "WEBP")):
        assert header_problem(data[:65536]) is None
        assert header_problem(data[:16]) is None
    side = int(np.sqrt(MAX_PIXELS)) + 1000
    with pytest.warns(Image.DecompressionBombWarning):
        assert "decompression bomb" in header_problem(encode(Image.new("1", (side, side)), "PNG", optimize=True))


@pytest.mark.parametrize("options", [{}, {"irreversible": True}, {"no_jp2": True}, {"num_resolutions": 2}])
def test_a_jpeg2000_scan_is_decoded_at_a_coarser_resolution_and_measures_as_its_jpeg_copy(photo, options):
    """Only the wavelet levels a thumbnail needs are decoded (as many as the file has: one
    here with `num_resolutions` 2), and the thumbnail reads as the JPEG copy's does."""
    from dedup_assets.vision.clustering import SHARPNESS_TIE
    from dedup_assets.vision.decode import _jpeg2000_discarded_levels, _jpeg2000_levels
    from dedup_assets.vision.features import extract_features

    scan = photo.resize((2400, 2400 * photo.height // photo.width))
    data = encode(scan, "JPEG2000", **options)
    assert _jpeg2000_levels(data) == options.get("num_resolutions", 6) - 1
    assert _jpeg2000_discarded_levels(data, *scan.size, THUMBNAIL_SIDE) == (0 if options.get("num_resolutions") else 2)
    decoded = decode_thumbnail(data)
    assert (decoded.format, decoded.width, decoded.height) == ("JPEG2000", *scan.size)
    assert THUMBNAIL_SIDE <= max(decoded.thumbnail.shape[:2]) < 2 * THUMBNAIL_SIDE
    as_jp2, as_jpeg = extract_features(data), extract_features(encode(scan, "JPEG", quality=92))
    assert bin(as_jp2.wavelet_hash ^ as_jpeg.wavelet_hash).count("1") <= 2
    assert SHARPNESS_TIE < as_jp2.sharpness / as_jpeg.sharpness < 1 / SHARPNESS_TIE


@pytest.mark.parametrize("options, quality", [
    ({}, 100), ({"irreversible": True}, None),  # lossless; the 9/7 wavelet is lossy
    ({"quality_mode": "rates", "quality_layers": [20]}, None),  # reversible, but cut at 20:1
])
def test_a_lossless_jpeg2000_is_recognised_as_lossless(photos, options, quality):
    for photo in list(photos.values())[:2]:
        data = encode(photo.resize((1200, 1200 * photo.height // photo.width)), "JPEG2000", **options)
        assert decode_thumbnail(data).jpeg_quality == quality
        assert decode_thumbnail(encode(photo.convert("L"), "JPEG2000", **options)).jpeg_quality == quality


@pytest.mark.parametrize("size", [(2400, 1601), (2403, 1599), (2047, 1537)])
def test_a_jpeg2000_of_odd_sides_is_decoded_at_a_level_pillow_and_openjpeg_size_alike(photo, size):
    """Pillow rounds a reduced side, OpenJPEG rounds it up (1601 at 1/4: 400 against 401,
    "broken data stream"): only levels where they agree are left undecoded."""
    from dedup_assets.vision.decode import _jpeg2000_discarded_levels

    data = encode(photo.resize(size), "JPEG2000")
    levels = _jpeg2000_discarded_levels(data, *size, THUMBNAIL_SIDE)
    assert levels >= 1
    with Image.open(io.BytesIO(data)) as image:
        image.reduce = levels
        image.load()  # no fallback needed
    assert THUMBNAIL_SIDE <= max(decode_thumbnail(data).thumbnail.shape[:2]) < 2 * THUMBNAIL_SIDE


def test_a_jpeg2000_that_openjpeg_sizes_otherwise_is_decoded_whole(photo, monkeypatch):
    """Such a codestream (an image offset) cannot be written here with Pillow: the level
    that breaks it is forced instead, as the file would."""
    from dedup_assets.vision import decode

    data = encode(photo.resize((2400, 1601)), "JPEG2000")
    monkeypatch.setattr(decode, "_jpeg2000_discarded_levels", lambda *_: 2)  # 1601 / 4: 400 vs 401
    with Image.open(io.BytesIO(data)) as image, pytest.raises(OSError):
        image.reduce = 2
        image.load()
    assert THUMBNAIL_SIDE <= max(decode_thumbnail(data).thumbnail.shape[:2]) < 2 * THUMBNAIL_SIDE


def test_a_decompression_bomb_is_refused_before_decoding():
    side = int(np.sqrt(MAX_PIXELS)) + 1000
    # A tiny PNG whose header declares a huge size.
    header = encode(Image.new("1", (side, side)), "PNG", optimize=True)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(DecodeError, match="decompression bomb"):
        decode_thumbnail(header)
    beyond_pillow = encode(Image.new("1", (2 * side, side)), "PNG", optimize=True)  # Pillow refuses to open it
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_thumbnail(beyond_pillow)


def test_a_large_image_within_the_limit_opens_without_a_warning():
    side = int(np.sqrt(100_000_000))  # above Pillow's default limit (89.5M), below ours
    header = encode(Image.new("1", (side, side)), "PNG", optimize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Image.open(io.BytesIO(header)) as image:
            assert image.size == (side, side)


def test_opencv_runs_single_threaded_inside_our_pools_and_gets_its_threads_back():
    import cv2

    before = cv2.getNumThreads()
    with pytest.raises(RuntimeError):
        with opencv_single_threaded():
            assert cv2.getNumThreads() == 1
            raise RuntimeError("a failed batch")
    assert cv2.getNumThreads() == before


def test_a_heic_decodes_upright_at_thumbnail_size(photo):
    wide = photo.resize((800, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones store portrait photos
    decoded = decode_thumbnail(encode(wide, "HEIF", quality=80, exif=exif.tobytes()))
    assert (decoded.width, decoded.height, decoded.format) == (400, 800, "HEIF")
    assert decoded.thumbnail.shape == (400, 200, 3)
    as_jpeg = decode_thumbnail(encode(wide.rotate(-90, expand=True), quality=95)).thumbnail
    resized = np.asarray(Image.fromarray(as_jpeg).resize(decoded.thumbnail.shape[1::-1]), dtype=np.float64)
    assert np.abs(decoded.thumbnail - resized).mean() < 4  # the same picture, the same way up


def test_a_heic_is_decoded_from_its_stored_thumbnail_when_that_is_large_enough(photo):
    # A phone stores a 320 px thumbnail beside the 12 MP picture (whole: 361 ms; from it: 5.9 ms).
    big = photo.resize((2000, 1500))
    whole = decode_thumbnail(encode(big, "HEIF", quality=80, thumbnails=[200]))  # too small to use
    drafted = decode_thumbnail(encode(big, "HEIF", quality=80, thumbnails=[320]))
    assert (whole.width, whole.height) == (drafted.width, drafted.height) == (2000, 1500)
    assert whole.thumbnail.shape == (375, 500, 3)
    assert drafted.thumbnail.shape == (240, 320, 3)
    resized = np.asarray(Image.fromarray(whole.thumbnail).resize((320, 240)), dtype=np.float64)
    assert np.abs(drafted.thumbnail - resized).mean() < 10


def test_a_damaged_heic_says_so(photo):
    heic = encode(photo, "HEIF", quality=60)
    with pytest.raises(DecodeError, match=r"^corrupt or truncated image data: .*end of file.*\)$"):
        decode_thumbnail(heic[: len(heic) // 2])  # the container reads; its picture's data is cut
    with pytest.raises(DecodeError, match="corrupt or truncated HEIF image"):
        decode_thumbnail(heic[:300])  # the container itself is cut
