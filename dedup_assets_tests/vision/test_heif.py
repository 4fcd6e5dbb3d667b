import io

import numpy as np
import pillow_heif
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from dedup_assets.demo_data import shipped_photos
from dedup_assets.vision.clustering import fidelity
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.heif import avif_quantiser, estimate_heif_quality, heif_quantiser
from dedup_assets_tests.vision.conftest import encode


def heic(image: Image.Image, **options) -> bytes:
    return encode(image, "HEIF", **options)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return shipped_photos()["astronaut"].convert("RGB")


def test_the_quantiser_follows_the_quality_setting(photo):
    quantisers = [heif_quantiser(heic(photo, quality=quality)) for quality in (10, 30, 50, 70, 90)]
    assert None not in quantisers
    assert quantisers == sorted(quantisers, reverse=True) and quantisers[0] - quantisers[-1] >= 30
    assert all(0 <= qp <= 51 for qp in quantisers)


def test_a_ten_bit_heic_reads_as_an_eight_bit_one(photo):
    # A camera's HEIF holds 10-bit samples: at one setting x265 codes it with the QP of the
    # 8-bit file and the same SSIM, so the QP's JPEG equivalent holds for it too.
    samples = np.asarray(photo, dtype=np.uint16) * 257
    deep = pillow_heif.from_bytes(mode="RGB;16", size=photo.size, data=samples.tobytes())
    buffer = io.BytesIO()
    deep.save(buffer, quality=50)
    decoded = decode_thumbnail(buffer.getvalue())
    assert heif_quantiser(buffer.getvalue()) == heif_quantiser(heic(photo, quality=50))
    assert decoded.jpeg_quality == estimate_heif_quality(heic(photo, quality=50))
    as_photo = np.asarray(photo.resize(decoded.thumbnail.shape[1::-1]), dtype=np.float64)
    assert np.abs(decoded.thumbnail - as_photo).mean() < 4  # decoded to 8 bits, the same picture


def test_an_avifs_quantiser_follows_the_quality_setting(photo):
    indices = [avif_quantiser(encode(photo, "AVIF", quality=quality)) for quality in (10, 30, 50, 70, 90)]
    assert None not in indices
    assert indices == sorted(indices, reverse=True) and indices[0] - indices[-1] >= 150
    assert heif_quantiser(encode(photo, "AVIF", quality=50)) is None
    assert avif_quantiser(heic(photo, quality=50)) is None
    # Wider than 4,096 px: AV1 codes it in two tile columns, which the header then lists.
    wide = photo.resize((5000, 300))
    assert avif_quantiser(encode(wide, "AVIF", quality=50)) == indices[2]


def test_tiles_thumbnails_and_orientation_read_as_the_single_image(photo):
    big = photo.resize((1200, 1200))
    exif = Image.Exif()
    exif[0x0112] = 6
    single = heif_quantiser(heic(big, quality=60))
    assert heif_quantiser(heic(big, quality=60, tile_size=512)) == single  # a grid of coded tiles
    assert heif_quantiser(heic(big, quality=60, thumbnails=[320], exif=exif.tobytes())) == single


def _jpeg_quality_as_faithful(photo: Image.Image, data: bytes) -> int:
    """The lowest JPEG quality whose SSIM to the photo reaches the file's (bisection)."""
    def similarity(encoded: bytes) -> float:
        return structural_similarity(np.asarray(photo), np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")),
                                     channel_axis=2)
    target, low, high = similarity(data), 10, 100
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if similarity(encode(photo, "JPEG", quality=middle)) < target else (low, middle)
    return low


@pytest.mark.parametrize("fmt, setting", [("HEIF", 35), ("HEIF", 65), ("AVIF", 30), ("AVIF", 60)])
def test_the_estimate_is_the_jpeg_quality_as_faithful_as_the_file(fmt, setting):
    # Over the shipped photos (those up to 640 px, for time), as the estimate was measured:
    # the median of the JPEG qualities with the file's SSIM is the estimate, within a few points.
    estimates, matches = [], []
    for image in (image for image in shipped_photos().values() if max(image.size) <= 640):
        data = encode(image.convert("RGB"), fmt, quality=setting)
        estimates.append(estimate_heif_quality(data))
        matches.append(_jpeg_quality_as_faithful(image.convert("RGB"), data))
    assert len(set(estimates)) == 1  # one setting, one quantiser, one estimate
    assert abs(estimates[0] - np.median(matches)) <= 4, (estimates[0], sorted(matches))


def test_a_phones_heic_is_not_ranked_below_its_own_jpeg_export(photo):
    # The export decodes the HEIC and compresses it again: it cannot be more faithful.
    original = heic(photo, quality=70, thumbnails=[320])
    export = encode(Image.open(io.BytesIO(original)).convert("RGB"), "JPEG", quality=90)
    from_phone, exported = decode_thumbnail(original), decode_thumbnail(export)
    assert from_phone.format == "HEIF" and exported.format == "JPEG"
    assert fidelity(from_phone.format, from_phone.jpeg_quality) >= fidelity(exported.format, exported.jpeg_quality)


def test_a_cdns_coarse_avif_is_not_ranked_above_the_jpeg_it_came_from(photo):
    original = encode(photo, "JPEG", quality=75)
    variant = encode(Image.open(io.BytesIO(original)).convert("RGB"), "AVIF", quality=30)
    jpeg, avif = decode_thumbnail(original), decode_thumbnail(variant)
    assert avif.format == "AVIF"
    assert fidelity(avif.format, avif.jpeg_quality) < fidelity(jpeg.format, jpeg.jpeg_quality)


def test_other_and_damaged_files_read_as_unknown(photo):
    coded, av1 = heic(photo, quality=50), encode(photo, "AVIF", quality=50)
    for data in (b"", b"garbage", coded[:200], coded[:40] + bytes(len(coded) - 40), av1[:200],
                 av1[:40] + bytes(len(av1) - 40), encode(photo, "JPEG"), encode(photo, "PNG"),
                 encode(photo.convert("L"), "JPEG")):
        assert estimate_heif_quality(data) is None
