import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from dedup_assets.demo_data import camera_dng, shipped_photos
from dedup_assets.vision.camera_raw import camera_raw_kind, read_camera_raw
from dedup_assets.vision.decode import MAX_PIXELS, DecodeError, decode_thumbnail, header_problem
from dedup_assets_tests.vision.conftest import encode

# Turns of the upright picture that give the stored one, for TIFF/EXIF orientations.
_STORED_TURNS = {1: 0, 3: 2, 6: 1, 8: 3}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return shipped_photos()["astronaut"].convert("RGB").resize((1200, 800))


def _apart(thumbnail: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference once `thumbnail` is resized to `reference`'s shape."""
    resized = Image.fromarray(thumbnail).resize(reference.shape[1::-1], Image.Resampling.BILINEAR)
    return float(np.abs(np.asarray(resized, dtype=np.float64) - reference).mean())


@pytest.mark.parametrize("preview", ["jpeg", "bitmap"])
def test_a_dng_is_decoded_from_its_cameras_preview_at_the_sensors_size(photo, preview):
    # Read as a TIFF, a DNG was its 256 px first page: its master then ranked below its
    # own JPEG, and was dropped.
    decoded = decode_thumbnail(camera_dng(photo, preview))
    assert (decoded.format, decoded.width, decoded.height) == ("RAW", 1200, 800)
    assert max(decoded.thumbnail.shape) >= 256
    assert _apart(decoded.thumbnail, decode_thumbnail(encode(photo, quality=95)).thumbnail) < 4


@pytest.mark.parametrize("preview, preview_size", [(None, None), ("jpeg", (1200, 675))])  # none; a 16:9 crop
def test_without_a_preview_of_its_picture_a_raw_is_rendered_by_libraw(photo, preview, preview_size):
    data = camera_dng(photo, preview, preview_size=preview_size)
    rendered = read_camera_raw(data, 256, MAX_PIXELS)
    assert isinstance(rendered.preview, np.ndarray) and rendered.preview.shape == (400, 600, 3)  # half size
    decoded = decode_thumbnail(data)
    assert (decoded.format, decoded.width, decoded.height) == ("RAW", 1200, 800)
    jpeg = decode_thumbnail(encode(photo, quality=95)).thumbnail
    assert _apart(decoded.thumbnail, jpeg) < 12  # LibRaw's rendering, not the camera's


@pytest.mark.parametrize("preview", ["jpeg", None])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_raw_is_turned_upright(photo, preview, orientation):
    upright = decode_thumbnail(encode(photo, quality=95)).thumbnail
    stored = photo.rotate(90 * _STORED_TURNS[orientation], expand=True)
    decoded = decode_thumbnail(camera_dng(stored, preview, orientation))
    assert (decoded.width, decoded.height) == (1200, 800)
    assert _apart(decoded.thumbnail, upright) < 12
    assert _apart(decoded.thumbnail, np.rot90(upright, 2)) > 40


@pytest.mark.parametrize("head, kind", [
    (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom", "CR3"),
    (b"FUJIFILMCCD-RAW 0201FF383501", "RAF"),
    (b"IIRO\x08\x00\x00\x00", "ORF"),
    (b"IIU\x00\x18\x00\x00\x00", "RW2"),
    (b"II*\x00\x10\x00\x00\x00CR\x02\x00", "CR2"),
])
def test_raw_formats_are_told_from_their_first_bytes(head, kind):
    assert camera_raw_kind(head) == kind
    assert header_problem(head + bytes(64)) is None  # a CR3 had read as "an MP4 or QuickTime video"


def test_tiffs_are_told_raw_from_their_first_directory(photo):
    assert camera_raw_kind(camera_dng(photo, None)) == "DNG"
    assert camera_raw_kind(encode(photo, "TIFF")) is None
    assert camera_raw_kind(encode(photo)) is None


def test_a_tiff_whose_first_page_is_a_reduced_copy_but_no_camera_raw_is_read_as_a_tiff(photo):
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tiff:  # as a pyramid or a scanner's preview may be stored
        tiff.write(np.asarray(photo.resize((300, 200))), photometric="rgb", subfiletype=1, subifds=1)
        tiff.write(np.asarray(photo), photometric="rgb")
    assert camera_raw_kind(buffer.getvalue()) == "raw?"
    decoded = decode_thumbnail(buffer.getvalue())
    assert (decoded.format, decoded.width, decoded.height) == ("TIFF", 300, 200)  # its first page, as before


@pytest.mark.parametrize("damage", ["cr3", "cut"])
def test_a_damaged_raw_says_so(photo, damage):
    data = camera_dng(photo, None)
    data = b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + bytes(5000) if damage == "cr3" else data[:4000]
    with pytest.raises(DecodeError, match="camera raw not decodable"):
        decode_thumbnail(data)
