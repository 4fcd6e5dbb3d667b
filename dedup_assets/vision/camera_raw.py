"""Camera raw files (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, ...) through LibRaw (rawpy).

A raw file is the sensor's data and the picture the camera rendered from it, stored as
a preview beside it: that preview is what the camera's own JPEG shows, so it is compared
when it is large enough; otherwise LibRaw renders the sensor data at half size. The size
reported is the sensor picture's, never the preview's: a DNG's first directory holds a
256 px preview, and read as a TIFF its master ranked below its own JPEG and was dropped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

# Raw formats told from their first bytes. TIFF-based ones (DNG, NEF, ARW, PEF, SRW, ...)
# are told from their first directory's tags.
_SIGNATURES = [(0, b"FUJIFILMCCD-RAW", "RAF"), (0, b"IIRO", "ORF"), (0, b"IIRS", "ORF"), (0, b"MMOR", "ORF"),
               (0, b"IIU\x00", "RW2"), (0, b"FOVb", "X3F"), (0, b"\x00MRM", "MRW"), (4, b"ftypcrx ", "CR3"),
               (0, b"II*\x00\x10\x00\x00\x00CR\x02", "CR2")]
_DNG_VERSION, _NEW_SUBFILE_TYPE, _SUB_IFDS = 50706, 254, 330
_REDUCED_RESOLUTION = 1  # NewSubfileType bit: this directory is a smaller copy of the picture
# LibRaw's `flip` → quarter turns counter-clockwise that make its preview upright.
_QUARTER_TURNS = {0: 0, 3: 2, 5: 1, 6: 3}
# A preview whose shape differs more than this from the sensor picture's shows another
# frame (bars, a crop): LibRaw's rendering is used instead.
_ASPECT_TOLERANCE = 0.03


class CameraRawError(ValueError):
    """LibRaw could not read the file; the message says why."""


@dataclass(frozen=True)
class RawPicture:
    preview: bytes | np.ndarray  # an encoded JPEG, or 8-bit RGB pixels
    quarter_turns: int  # counter-clockwise turns that make `preview` upright
    width: int  # the sensor picture's size, upright
    height: int


def camera_raw_kind(data: bytes) -> str | None:
    """The raw format a file's first bytes declare (CR2, CR3, RAF, ...); "DNG" for a TIFF
    carrying a DNG version; "raw?" for a TIFF whose first directory is only a reduced copy
    of a picture kept in sub-directories (how NEF, ARW and others store theirs, and how
    some other TIFFs do); None for anything else."""
    if kind := next((kind for offset, magic, kind in _SIGNATURES if data[offset:offset + len(magic)] == magic), None):
        return kind
    tags = _first_directory(data)
    if _DNG_VERSION in tags:
        return "DNG"
    if _SUB_IFDS in tags and (tags.get(_NEW_SUBFILE_TYPE) or 0) & _REDUCED_RESOLUTION:
        return "raw?"
    return None


def _first_directory(data: bytes) -> dict[int, int | None]:
    """A classic TIFF's first directory: tag → its value where it is one integer held in
    the entry, else None; {} for anything else (BigTIFF included)."""
    order = {b"II*\x00": "little", b"MM\x00*": "big"}.get(data[:4])
    if order is None:
        return {}
    offset = int.from_bytes(data[4:8], order)
    if offset + 2 > len(data):
        return {}
    count = int.from_bytes(data[offset:offset + 2], order)
    tags = {}
    for start in range(offset + 2, min(offset + 2 + 12 * count, len(data) - 11), 12):
        tag, kind, values = (int.from_bytes(data[start + a:start + b], order) for a, b in ((0, 2), (2, 4), (4, 8)))
        size = {3: 2, 4: 4}.get(kind)  # SHORT, LONG
        tags[tag] = int.from_bytes(data[start + 8:start + 8 + size], order) if size and values == 1 else None
    return tags


def read_camera_raw(data: bytes, min_side: int, max_pixels: int) -> RawPicture:
    """The camera's preview when its longest side is at least `min_side` and its shape
    the sensor picture's, else LibRaw's rendering at half size (about 0.5 s for 24 MP)."""
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            flip = raw.sizes.flip
            width, height = (raw.sizes.height, raw.sizes.width) if flip in (5, 6) else (raw.sizes.width, raw.sizes.height)
            if width * height > max_pixels:
                raise CameraRawError(f"camera raw of {width}x{height} exceeds the {max_pixels:,}-pixel limit; not decoded")
            preview = _usable_preview(raw, width, height, min_side)
            if preview is not None:
                return RawPicture(preview, _QUARTER_TURNS.get(flip, 0), width, height)
            rendered = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # turned upright by LibRaw
            return RawPicture(np.ascontiguousarray(rendered), 0, width, height)
    except CameraRawError:
        raise
    except (rawpy.LibRawError, rawpy.NotSupportedError) as error:
        raise CameraRawError(f"camera raw not decodable (LibRaw: {str(error).strip() or type(error).__name__})") from None


def _usable_preview(raw, width: int, height: int, min_side: int) -> bytes | np.ndarray | None:
    import rawpy
    from PIL import Image

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, rawpy.NotSupportedError):  # none stored, or one in a form LibRaw does not give out
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            with Image.open(io.BytesIO(thumb.data)) as image:
                shape = image.size
        except Exception:  # a damaged preview: LibRaw renders the sensor data instead
            return None
    else:
        shape = (thumb.data.shape[1], thumb.data.shape[0])  # a bitmap: rows, columns, samples
    long_side, short_side = max(shape), min(shape)
    if long_side < min_side or short_side == 0:
        return None
    if abs(long_side / short_side - max(width, height) / max(min(width, height), 1)) > _ASPECT_TOLERANCE * long_side / short_side:
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        return thumb.data
    pixels = thumb.data if thumb.data.ndim == 3 else thumb.data[..., None]
    if pixels.dtype != np.uint8 or pixels.shape[-1] not in (1, 3):
        return None
    return np.ascontiguousarray(np.repeat(pixels, 3, axis=2) if pixels.shape[-1] == 1 else pixels)
