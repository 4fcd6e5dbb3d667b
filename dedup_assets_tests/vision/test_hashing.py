import io
import itertools

import numpy as np
import pytest
from PIL import Image

from dedup_assets.demo_data import shipped_photos
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.hashing import hamming, hash_to_bytes, is_informative, to_gray, wavelet_hash


def jpeg(image: Image.Image, quality=90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def hash_of(data: bytes) -> int:
    return wavelet_hash(to_gray(decode_thumbnail(data).thumbnail))


@pytest.fixture(scope="module")
def photos():
    return shipped_photos()


def test_hash_is_stable_under_resize_and_recompression(photos):
    for photo in photos.values():
        reference = hash_of(jpeg(photo, 95))
        half = photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.BILINEAR)
        assert hamming(reference, hash_of(jpeg(half, 85))) <= 4
        assert hamming(reference, hash_of(jpeg(photo, 30))) <= 4


def test_a_photo_hash_is_informative_and_a_mostly_flat_frame_hash_is_not(photos):
    hashes = np.array([hash_of(jpeg(photo)) for photo in photos.values()], np.uint64)
    assert is_informative(hashes).all()
    on_white = Image.new("RGB", (600, 600), "white")
    on_white.paste(photos["coffee"].resize((250, 250)), (300, 100))  # under half the frame
    flat = np.array([hash_of(jpeg(on_white)), hash_of(jpeg(Image.new("RGB", (600, 400), "gray")))], np.uint64)
    assert flat.tolist() == [0, 0] and not is_informative(flat).any()


def test_hash_differs_between_different_photos(photos):
    hashes = [hash_of(jpeg(photo)) for photo in photos.values()]
    distances = [hamming(a, b) for a, b in itertools.combinations(hashes, 2)]
    assert min(distances) >= 10


def test_hash_bytes_layout_matches_the_integer():
    packed = hash_to_bytes(np.array([0x0102030405060708], dtype=np.uint64))
    assert packed.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
