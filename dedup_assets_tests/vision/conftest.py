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


def camera_dng(photo: Image.Image, preview: str | None = "jpeg", orientation: int = 1,
               preview_size: tuple[int, int] | None = None) -> bytes:
    """A DNG as a camera or a raw converter writes one: a 256 px preview in its first
    directory, the sensor's RGGB mosaic of `photo` (linear, 12 bits, linear sRGB as its
    camera space) in a sub-directory and, with `preview="jpeg"`, a JPEG preview of the
    photo (or of `preview_size`) in another; "bitmap": the 256 px one alone; None: no preview."""
    import tifffile

    rgb = (np.asarray(photo.convert("RGB"), dtype=np.float32) / 255) ** 2.2
    mosaic = np.empty(rgb.shape[:2], np.uint16)
    for (dy, dx), channel in {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}.items():
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel] * 4095
    xyz_to_srgb = (32406, -15372, -4986, -9689, 18758, 415, 557, -2040, 10570)
    dng_tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "Probe Camera", True),
                (274, "H", 1, (orientation,), True)]
    sensor_tags = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True),  # RGGB
                   (50717, "I", 1, (4095,), True), (50721, "2i", 9, tuple(v for x in xyz_to_srgb for v in (x, 10000)), True),
                   (50778, "H", 1, (21,), True), (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True)]
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tiff:
        if preview is None:
            tiff.write(mosaic, photometric=32803, subfiletype=0, extratags=dng_tags + sensor_tags)
            return buffer.getvalue()
        small = photo.convert("RGB")
        small.thumbnail((256, 256))
        tiff.write(np.asarray(small), photometric="rgb", subfiletype=1, subifds=1 + (preview == "jpeg"), extratags=dng_tags)
        tiff.write(mosaic, photometric=32803, subfiletype=0, extratags=sensor_tags)
        if preview == "jpeg":
            shown = photo.convert("RGB").resize(preview_size) if preview_size else photo.convert("RGB")
            jpeg = io.BytesIO()
            shown.save(jpeg, "JPEG", quality=90)
            # The JPEG is encoded already; tifffile, without imagecodecs, only needs the
            # lookup of JPEG compression (7) to succeed to store it as it is.
            codecs = tifffile.TIFF.COMPRESSORS._codecs
            missing = 7 not in codecs
            codecs.setdefault(7, lambda data, *args, **kwargs: data)
            try:
                tiff.write(iter([jpeg.getvalue()]), shape=(shown.height, shown.width, 3), dtype=np.uint8,
                           photometric="ycbcr", compression=7, subfiletype=1, rowsperstrip=shown.height)
            finally:
                if missing:
                    del codecs[7]
    return buffer.getvalue()
