import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from dedup_assets.demo_data import recolor, shipped_photos
from dedup_assets.vision.decode import decode_thumbnail


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return shipped_photos()


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    """The file `image.save` writes, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def thumbnail(image: Image.Image, quality: int = 92) -> np.ndarray:
    """What the pipeline stores: the image saved as JPEG, decoded at thumbnail size."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return decode_thumbnail(buffer.getvalue()).thumbnail


def crop(image: Image.Image, keep: float, anchor: str = "tl") -> Image.Image:
    side = keep**0.5
    w, h = round(image.width * side), round(image.height * side)
    x = 0 if "l" in anchor else image.width - w
    y = 0 if "t" in anchor else image.height - h
    return image.crop((x, y, x + w, y + h))


def caption(image: Image.Image, text: str = "© PHOTO AGENCY") -> Image.Image:
    edited = image.copy()
    ImageDraw.Draw(edited).text((10, image.height - 60), text, fill=(255, 255, 255),
                                font_size=40, stroke_width=2, stroke_fill=(0, 0, 0))
    return edited


@pytest.fixture(scope="session")
def samples(photos) -> dict[str, np.ndarray]:
    """Thumbnails of real photos and edited copies, for verification and clustering."""
    astronaut, coffee, chelsea = photos["astronaut"], photos["coffee"], photos["chelsea"]
    return {
        "astronaut": thumbnail(astronaut),
        "astronaut_crop": thumbnail(crop(astronaut, 0.65)),
        "astronaut_left": thumbnail(astronaut.crop((0, 0, astronaut.width // 2, astronaut.height))),
        "astronaut_right": thumbnail(astronaut.crop((astronaut.width // 2, 0, astronaut.width, astronaut.height))),
        "astronaut_mirrored": thumbnail(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        "astronaut_gray": thumbnail(astronaut.convert("L")),
        "astronaut_faded": thumbnail(ImageEnhance.Color(astronaut).enhance(0.4)),
        "coffee": thumbnail(coffee),
        "coffee_as_astronaut_colours": thumbnail(recolor(coffee, astronaut)),
        "coffee_captioned": thumbnail(caption(coffee.resize(astronaut.size))),
        "chelsea_captioned": thumbnail(caption(chelsea.resize(astronaut.size))),
    }

