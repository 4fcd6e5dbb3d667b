import io

import numpy as np
import pytest
from PIL import Image

from dedup_assets.demo_data import shipped_photos
from dedup_assets.vision.color import color_signature, has_colour
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.hashing import downsample


def signature_of(image: Image.Image, fmt: str, **options) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return color_signature(downsample(decode_thumbnail(buffer.getvalue()).thumbnail))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_a_grayscale_copy_has_no_colour_however_it_was_saved(name):
    photo = shipped_photos()[name]
    gray = photo.convert("L")
    signatures = np.stack([
        signature_of(photo.convert("RGB"), "JPEG", quality=90),
        signature_of(gray, "PNG"),
        signature_of(gray, "JPEG", quality=60),
        signature_of(gray.convert("RGB"), "JPEG", quality=40),  # three channels, chroma subsampled
    ])
    assert has_colour(signatures).tolist() == [True, False, False, False]


def test_a_grayscale_photo_has_no_colour_and_a_tinted_copy_has():
    camera = shipped_photos()["camera"].convert("RGB")
    sepia = Image.merge("RGB", [channel.point(lambda v, k=k: min(255, int(v * k)))
                                for channel, k in zip(camera.split(), (1.0, 0.9, 0.7))])
    assert has_colour(np.stack([signature_of(camera, "JPEG"), signature_of(sepia, "JPEG")])).tolist() == [False, True]
