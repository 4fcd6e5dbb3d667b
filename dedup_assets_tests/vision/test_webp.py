import io

import pytest
from PIL import Image

from dedup_assets.demo_data import shipped_photos
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.webp import estimate_webp_quality


def webp(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(shipped_photos()))
def test_the_quality_setting_is_read_back_from_the_header(name):
    photo = shipped_photos()[name].convert("RGB")
    estimates = [estimate_webp_quality(webp(photo, quality=quality)) for quality in (10, 25, 50, 75, 80, 90, 95)]
    assert estimates == sorted(estimates)  # finer settings never read as coarser
    for quality, estimate in zip((10, 25, 50, 75, 80, 90, 95), estimates):
        assert abs(estimate - quality) <= (4 if quality >= 80 else 14), (quality, estimate)


def test_lossless_animated_and_damaged_files():
    photo = shipped_photos()["astronaut"].convert("RGB")
    assert estimate_webp_quality(webp(photo, lossless=True)) == 100
    frames = [photo.resize((64, 64)).rotate(angle) for angle in (0, 10)]
    assert estimate_webp_quality(webp(frames[0], save_all=True, append_images=frames[1:])) is None
    lossy = webp(photo, quality=75)
    for damaged in (lossy[:20], b"RIFF" + bytes(20), b"", lossy[:12] + b"VP8 " + bytes(8)):
        assert estimate_webp_quality(damaged) is None
    with_alpha = webp(shipped_photos()["astronaut"].convert("RGBA"), quality=60)  # VP8X, ALPH, then VP8
    assert 45 <= estimate_webp_quality(with_alpha) <= 75


def test_decoding_a_webp_reports_its_quality():
    photo = shipped_photos()["coffee"].convert("RGB")
    decoded = decode_thumbnail(webp(photo, quality=90))
    assert decoded.format == "WEBP" and 86 <= decoded.jpeg_quality <= 94
