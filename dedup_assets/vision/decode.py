"""Decode an image once, at thumbnail size, with the facts a quality ranking needs."""

from __future__ import annotations

import contextlib
import io
import itertools
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from dedup_assets.vision.camera_raw import CameraRawError, camera_raw_kind, read_camera_raw
from dedup_assets.vision.heif import estimate_heif_quality, is_heif_container
from dedup_assets.vision.webp import estimate_webp_quality

# HEIC/HEIF, phones' default format, through Pillow. One decoding thread: the hash stage
# already runs a decoding process per core.
pillow_heif.register_heif_opener()
pillow_heif.options.DECODE_THREADS = 1

THUMBNAIL_SIDE = 256
# Refuse images whose header declares more pixels than this before decoding them:
# a decompression bomb must not take the worker's memory.
MAX_PIXELS = 150_000_000
# Pillow's own guard, at ours: at its default (89.5M pixels) every accepted image between
# that and MAX_PIXELS logged a DecompressionBombWarning. Above it Pillow still warns, and
# from twice it refuses to open; the header check below records the reason either way.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# A palette holds at most 256 colours: a photo reduced to one (a GIF, a "PNG-8" export)
# compares with its original as a JPEG of quality 88 does (SSIM; PSNR gives 89: the median
# over the shipped photos, 65-95 each). A graphic's palette is exact, yet a truecolour
# lossless copy holds it as exactly, so ranking every palette below lossless costs nothing.
PALETTE_QUALITY = 88

# libjpeg's standard luminance quantisation table (Annex K), for quality estimation.
_STANDARD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)


@contextlib.contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """OpenCV's own thread pool off while threads of ours each make OpenCV calls: pools
    nested in pools oversubscribe the cores. On a 16-core GPU host, ORB describing on 16
    threads went from 683 to 1,064 images/s, and resizing for it from 5,228 to 8,960
    (docs/performance.md §7). The setting is the process's: restored on exit."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


class DecodeError(ValueError):
    """The bytes are not an image this pipeline can use; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    thumbnail: np.ndarray  # H×W×3 uint8 RGB, upright; longest side in [THUMBNAIL_SIDE, 2×THUMBNAIL_SIDE) unless the image is smaller
    width: int  # original size, after EXIF orientation
    height: int
    format: str
    # Estimated on the JPEG scale: JPEG from its quantisation tables, WebP from its
    # quantisers (100: lossless), HEIC and AVIF from their quantisers, a palette image PALETTE_QUALITY
    # (a grayscale GIF: 100); None for other formats.
    jpeg_quality: int | None
    # Several pictures: an animation (GIF, WebP, APNG of more than one frame; its thumbnail
    # is `_picture_frame`'s) or a document of several pages (TIFF; its first page's).
    multi_picture: bool = False


def estimate_jpeg_quality(quantization: dict[int, list[int]] | None) -> int | None:
    """Inverse of libjpeg's quality scaling, from the luminance table.

    Uses the ratio of table sums, so it does not depend on the order (zig-zag or
    natural) in which the decoder reports coefficients.
    """
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    scale = 100.0 * float(np.sum(quantization[0])) / float(_STANDARD_LUMA.sum())
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(round(min(max(quality, 1.0), 100.0)))


def _target_size(width: int, height: int, side: int) -> tuple[int, int]:
    ratio = side / max(width, height)
    if ratio >= 1.0:
        return width, height
    return max(1, round(width * ratio)), max(1, round(height * ratio))


# What files that are not images begin with, so that a reason can say what a blob is
# (asset containers hold videos, documents and archives beside their images).
_OTHER_FILES = [(0, b"%PDF-", "a PDF document"), (0, b"PK\x03\x04", "a ZIP archive or Office document"),
                (0, b"\x1f\x8b", "a gzip archive"), (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
                (0, b"Rar!\x1a\x07", "a RAR archive"), (0, b"\x1aE\xdf\xa3", "a Matroska or WebM video"),
                (8, b"AVI ", "an AVI video"), (4, b"ftyp", "an MP4 or QuickTime video"),
                (4, b"moov", "a QuickTime video"), (0, b"ID3", "an MP3 audio file"),
                (0, b"{", "JSON text"), (0, b"<", "XML or HTML text"),
                (0, b"\xff\x0a", "a JPEG XL image, a format not read here"),
                (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image, a format not read here")]


def _unrecognised(data: bytes) -> str:
    if b"<svg" in data[:4096]:
        return "not a recognised image format (it looks like an SVG drawing: vector images are not compared)"
    kind = next((what for offset, magic, what in _OTHER_FILES if data[offset:offset + len(magic)] == magic), None)
    return "not a recognised image format" + (f" (it looks like {kind})" if kind else "")


def _too_many_pixels(width: int, height: int) -> str | None:
    if width * height > MAX_PIXELS:
        return (f"declared size {width}x{height} exceeds the {MAX_PIXELS:,}-pixel limit "
                "(possible decompression bomb); not decoded")
    return None


def header_problem(head: bytes) -> str | None:
    """Why a file beginning with `head` cannot be an image decoded here, where its first
    bytes already tell (not an image format; more pixels than MAX_PIXELS); None when it
    may be one. The hash stage reads a large blob's head first, so a video of gigabytes
    is not downloaded to find that out. An image header longer than `head` (a JPEG with a
    large ICC profile) fails to open, but its format's signature is recognised: None."""
    Image.init()
    try:
        with Image.open(io.BytesIO(head)) as image:
            return _too_many_pixels(*image.size)
    except Image.DecompressionBombError as error:
        return f"{error}; not decoded"
    except Exception:
        signature = head[:16]
        if (is_heif_container(head) or camera_raw_kind(head)
                or any(accept and accept(signature) for _, accept in Image.OPEN.values())):
            return None
        return _unrecognised(head)


def decode_thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> DecodedImage:
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if raw_kind := camera_raw_kind(data):
        try:
            return _decode_camera_raw(data, side)
        except DecodeError:
            if raw_kind != "raw?":
                raise
            # Not a camera's: a TIFF whose first page is a smaller copy, read as before.
    try:
        image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        if data[:4] in TIFF_SIGNATURES:
            return _decode_tiff_with_tifffile(data, side, "Pillow does not read its samples")
        if is_heif_container(data):  # pillow-heif reads the whole container on opening
            raise DecodeError("corrupt or truncated HEIF image (HEIC, AVIF): its container could not be read") from None
        raise DecodeError(_unrecognised(data)) from None
    except Image.DecompressionBombError as error:
        raise DecodeError(f"{error}; not decoded") from None
    except Exception as error:  # Pillow raises many types on malformed headers
        raise DecodeError(f"unreadable image header: {error}") from None
    width, height = image.size
    if too_many := _too_many_pixels(width, height):
        raise DecodeError(too_many)
    # A JPEG that carries more pictures after the photo (a camera's large preview, a
    # phone's HDR gain map or depth map: CIPA's Multi-Picture Format) opens as "MPO"; its
    # first picture is the photo, an ordinary JPEG, and is measured and decoded as one.
    image_format = "JPEG" if image.format == "MPO" else image.format or "unknown"
    quality = None
    if image_format == "JPEG":
        quality = estimate_jpeg_quality(getattr(image, "quantization", None))
    elif image_format == "WEBP":
        quality = estimate_webp_quality(data)
    elif image_format == "JPEG2000":
        quality = estimate_jpeg2000_quality(data, width, height, len(image.getbands()))
    elif image_format in ("HEIF", "AVIF"):
        quality = estimate_heif_quality(data)
    elif image.mode in ("P", "PA"):
        quality = PALETTE_QUALITY
    elif image_format == "GIF":  # 256 grey levels: every 8-bit grayscale image exactly
        quality = 100
    try:
        orientation = image.getexif().get(0x0112, 1)
        upright_w, upright_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        pixels = None
        if image_format == "JPEG" and image.mode in ("RGB", "L") and _ends_with_eoi(data):
            pixels = _decode_jpeg_reduced(data, width, height, side)
        if pixels is None and image_format == "JPEG2000":
            pixels = _decode_jpeg2000(data, image, orientation, side)
        # (Not `n_frames`: a GIF's count reads every frame; a 100-frame GIF took 5x longer.)
        animated = image_format in ANIMATED_FORMATS and getattr(image, "is_animated", False)
        multi_picture = animated or (image_format == "TIFF" and _has_pages(image))
        if pixels is None:
            if animated:
                image.seek(_picture_frame(image))
            pixels = _decode_with_pillow(image, orientation, side)
    except DecodeError:
        raise
    except Exception as error:
        if image_format == "TIFF":  # a compression or sample layout Pillow lacks
            return _decode_tiff_with_tifffile(data, side, f"Pillow: {str(error).strip()}")
        raise DecodeError(f"corrupt or truncated image data: {str(error).strip()}") from None
    return DecodedImage(pixels, upright_w, upright_h, image_format, quality, multi_picture)


def _decode_camera_raw(data: bytes, side: int) -> DecodedImage:
    try:
        raw = read_camera_raw(data, side, MAX_PIXELS)
    except CameraRawError as error:
        raise DecodeError(str(error)) from None
    preview = Image.open(io.BytesIO(raw.preview)) if isinstance(raw.preview, bytes) else Image.fromarray(raw.preview)
    try:  # the preview's own EXIF orientation is not the raw's: LibRaw's is applied after
        pixels = _decode_with_pillow(preview, 1, side)
    except Exception as error:
        raise DecodeError(f"camera raw's preview not decodable: {str(error).strip()}") from None
    pixels = np.ascontiguousarray(np.rot90(pixels, raw.quarter_turns))
    return DecodedImage(pixels, raw.width, raw.height, "RAW", None)


# Classic TIFF and BigTIFF, either byte order.
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TIFF_MIN_IS_WHITE, _TIFF_GREY_OR_RGB = 0, (0, 1, 2)  # TIFF's PhotometricInterpretation values
_ORIENTED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


def _decode_tiff_with_tifffile(data: bytes, side: int, pillow_problem: str) -> DecodedImage:
    """TIFFs Pillow cannot read, through tifffile (scikit-image's TIFF reader): floating-point
    colour (an HDR merge, a 32-bit export) and sample layouts Pillow lacks. First page only,
    as Pillow reads a multi-page TIFF."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            page = tiff.pages.first
            height, width = page.imagelength, page.imagewidth
            if too_many := _too_many_pixels(width, height):
                raise DecodeError(too_many)
            orientation = int(page.tags.valueof(274, 1) or 1)
            photometric = int(page.photometric)
            if photometric not in _TIFF_GREY_OR_RGB:  # CMYK, YCbCr, Lab...: its four samples are no RGBA
                raise DecodeError(f"TIFF not decodable ({pillow_problem}; tifffile: photometric interpretation "
                                  f"{page.photometric.name} is not read here)")
            array = page.asarray()
            axes = page.axes
            examined = itertools.islice(tiff.pages, PAGES_EXAMINED)
            pages = sum(not getattr(other, "is_reduced", False) for other in examined)
    except DecodeError:
        raise
    except Exception as error:
        raise DecodeError(f"TIFF not decodable ({pillow_problem}; tifffile: {str(error).strip()})") from None
    if axes.startswith("S"):  # planar: one plane per sample
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) or array.ndim not in (2, 3):
        raise DecodeError(f"TIFF not decodable ({pillow_problem}; tifffile: samples shaped {array.shape})")
    factor = _reduction(width, height, side) if max(width, height) >= 2 * side else 1
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    samples = _reduced_to_8bit(array, factor)
    if photometric == _TIFF_MIN_IS_WHITE:  # grey stored inverted (0 is white)
        samples = 255 - samples
    image = _to_rgb(Image.fromarray(samples))
    if orientation in _ORIENTED:
        image = image.transpose(_ORIENTED[orientation])
    if max(image.size) >= 2 * side:
        image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    upright_w, upright_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return DecodedImage(np.asarray(image.convert("RGB")), upright_w, upright_h, "TIFF", None, pages > 1)


DEEP_GREY = ("I;16", "I;16B", "I;16L", "I", "F")  # Pillow's 16-bit, 32-bit and floating-point grey


def _box_reduced(array: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each factor × factor block (as Pillow's `reduce`, the ragged edge cut),
    in float32: a large scan gets no full-size floating-point copy."""
    if factor == 1:
        return array
    height, width = array.shape[0] // factor * factor, array.shape[1] // factor * factor
    blocks = array[:height, :width].reshape(height // factor, factor, width // factor, factor, *array.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _reduced_to_8bit(samples: np.ndarray, factor: int) -> np.ndarray:
    """Samples of any depth or type (H×W or H×W×C), box-reduced by `factor`, as 8 bits the
    way a viewer shows them (`white_points`, taken before the reduction makes them float)."""
    white = white_points(samples)
    reduced = _box_reduced(samples, factor)
    if reduced.dtype == np.uint8:
        return reduced
    values = reduced.astype(np.float64)  # the one copy: the rest works in place
    np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    values *= 255.0 / white
    return np.clip(values, 0, 255, out=values).astype(np.uint8)


def white_points(array: np.ndarray) -> np.ndarray:
    """The value shown as white for each sample of `array` (H×W or H×W×C, alpha last):
    16-bit samples on their full scale (a dark photo's 16-bit copy stays as dark as its
    JPEG: scaled by its brightest, a night shot's 16-bit PNG measured 14 of 64 hash bits
    from its JPEG and was missed); floating-point ones on 0-1, unless they go above
    (scene units: then the brightest); 8 bits 255; other integers (no agreed scale) by
    their brightest. Colour samples share one; an alpha sample (2 or 4) has its own."""
    channels = array.shape[-1] if array.ndim == 3 else 1
    if array.dtype == np.uint8:
        return np.full(channels, 255.0)
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return np.full(channels, 65535.0)
    alpha = channels in (2, 4)
    colour = array[..., :-1] if alpha else array
    points = [_brightest(colour, array.dtype.kind == "f")] * (channels - alpha)
    return np.array(points + ([_brightest(array[..., -1], array.dtype.kind == "f")] if alpha else []))


def _brightest(samples: np.ndarray, floating: bool) -> float:
    peak = float(np.nanmax(samples)) if samples.size else 0.0  # no copy of a large scan
    if floating and not np.isfinite(peak):  # an infinity among them (NaNs alone are skipped)
        finite = samples[np.isfinite(samples)]
        peak = float(finite.max()) if finite.size else 0.0
    if floating and peak <= 1.0:
        return 1.0
    return peak if peak > 0 else 1.0


def _ends_with_eoi(data: bytes) -> bool:
    # OpenCV decodes a truncated JPEG with a warning instead of failing: such files go
    # through Pillow, which reports them.
    return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                  4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _decode_jpeg_reduced(data: bytes, width: int, height: int, side: int) -> np.ndarray | None:
    """DCT-domain downscale by 1/2, 1/4 or 1/8 (libjpeg-turbo through OpenCV, which also
    applies EXIF orientation): several times faster than a full decode."""
    factor = _reduction(width, height, side)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[factor])
    if bgr is None:
        return None
    if max(bgr.shape[:2]) >= 2 * side:
        scale = side / max(bgr.shape[:2])
        size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _reduction(width: int, height: int, side: int) -> int:
    """The largest of 8, 4 and 2 that keeps the image at least thumbnail-sized (1: none)."""
    target_w, target_h = _target_size(width, height, side)
    return next((f for f in (8, 4, 2) if width // f >= target_w and height // f >= target_h), 1)


def _decode_jpeg2000(data: bytes, image: Image.Image, orientation: int, side: int) -> np.ndarray:
    levels = _jpeg2000_discarded_levels(data, *image.size, side)
    image.reduce = levels
    try:
        return _decode_with_pillow(image, orientation, side)
    except OSError:
        if not levels:
            raise
        # A codestream whose reduced size OpenJPEG computes otherwise than Pillow (an
        # image offset): decoded whole.
        return _decode_with_pillow(Image.open(io.BytesIO(data)), orientation, side)


def _jpeg2000_discarded_levels(data: bytes, width: int, height: int, side: int) -> int:
    """How many of a JPEG 2000 image's wavelet levels to leave undecoded: each halves its
    sides, and OpenJPEG then decodes only the coarser resolutions. One level short of the
    thumbnail's size (as many as the codestream has, its COD marker says), then the box
    average by 2 a JPEG's DCT reduce amounts to: a wavelet's coarse band keeps more detail
    than a box average, so all the way down the same picture read 2.8x sharper than as a
    JPEG, one short 1.4x. A 4800 x 3600 scan: ~0.16 s against 2.7-5.2 s whole.
    Only levels where Pillow's rounded size is OpenJPEG's rounded-up one (a side of 1601
    at 1/4: 400 against 401, "broken data stream"); one level always is."""
    levels = _jpeg2000_levels(data)
    target_w, target_h = _target_size(width, height, side)
    deepest = next((k for k in range(levels, 0, -1) if width >> k >= target_w and height >> k >= target_h), 0)
    return next((k for k in range(deepest - 1, 0, -1)
                 if all(n % (1 << k) == 0 or n % (1 << k) >= 1 << k >> 1 for n in (width, height))), 0)


def _jpeg2000_header(data: bytes) -> dict[int, bytes]:
    """The marker segments of a JPEG 2000 codestream's main header, by marker (SIZ, COD,
    QCD, ...): from SOC (inside a JP2 file's `jp2c` box) to the first tile's SOT."""
    segments: dict[int, bytes] = {}
    position = data.find(b"\xff\x4f\xff\x51")
    if position < 0:
        return segments
    position += 2
    while position + 4 <= len(data) and data[position] == 0xFF and data[position + 1] != 0x90:
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        segments.setdefault(data[position + 1], data[position + 4:end])
        position = end
    return segments


def _jpeg2000_levels(data: bytes) -> int:
    """The decomposition levels in a JPEG 2000 codestream's main header (0 if not found):
    COD holds Scod, the progression, the layers (2 bytes), MCT, then the levels."""
    cod = _jpeg2000_header(data).get(0x52, b"")
    return cod[5] if len(cod) > 5 else 0


# Bits per sample at or above which a reversible, unquantised JPEG 2000 is taken for
# lossless: such a codestream may still have been cut at a rate (Pillow's `quality_layers`
# with `irreversible=False`: 20:1 is 0.4), while the shipped photos stored losslessly take
# 1.5-2.1 (camera photos more). Cut at 8:1 or less it is as faithful as the best JPEGs
# anyway. Lossless graphics can take less: they are then ranked as a lossy JPEG 2000.
_LOSSLESS_BITS_PER_SAMPLE = 1.0


def estimate_jpeg2000_quality(data: bytes, width: int, height: int, components: int) -> int | None:
    """100 for a JPEG 2000 stored losslessly (the reversible 5/3 wavelet, no quantisation,
    and as many bits as lossless coding takes), else None (lossy: its quality unread), so
    a lossless master is kept over its JPEG copies of the same size."""
    header = _jpeg2000_header(data)
    cod, qcd = header.get(0x52, b""), header.get(0x5C, b"")
    reversible = len(cod) > 9 and cod[9] == 1
    unquantised = len(qcd) > 0 and qcd[0] & 0x1F == 0
    bits_per_sample = 8 * len(data) / max(1, width * height * components)
    return 100 if reversible and unquantised and bits_per_sample >= _LOSSLESS_BITS_PER_SAMPLE else None


ANIMATED_FORMATS = ("GIF", "WEBP", "PNG")  # APNG; not a TIFF's pages, nor an MPO's or a HEIF's pictures
FRAMES_EXAMINED = 100
# Grey-level standard deviation (of 255, at 64 px) from which a frame shows a picture: a
# photo's is 40-80, a blank or nearly faded-in frame's a few.
PICTURE_CONTRAST = 32.0
PAGES_EXAMINED = 64  # a TIFF's directories read to tell a document of pages


def _has_pages(tiff: Image.Image) -> bool:
    """Whether a TIFF holds more than one full page (a reduced copy, a thumbnail or a
    pyramid's level, is none). Left at its first page."""
    pages = 0
    try:
        for index in range(PAGES_EXAMINED):
            tiff.seek(index)
            pages += not tiff.tag_v2.get(254, 0) & 1  # NewSubfileType: reduced resolution
            if pages > 1:
                return True
    except Exception:  # the last page, or a damaged one after the first: the pages counted so far
        pass
    finally:
        tiff.seek(0)
    return False


def _picture_frame(animation: Image.Image) -> int:
    """The frame that stands for an animation: the first with PICTURE_CONTRAST, else the one
    with the most among its first FRAMES_EXAMINED. Its first frame may show nothing yet (a
    fade-in from black): every such animation hashed alike, and none like its own copy in
    another format (a CDN's WebP of a GIF). Most animations stop at their first frame."""
    contrasts = []
    for index in range(FRAMES_EXAMINED):
        try:
            animation.seek(index)
            frame = animation.convert("RGBA")
        except Exception:  # the last frame, or a damaged one after the first: the frames read so far
            break
        frame.thumbnail((64, 64), Image.Resampling.BOX)
        contrasts.append(float(np.asarray(_to_rgb(frame).convert("L")).std()))
        if contrasts[-1] >= PICTURE_CONTRAST:
            return index
    return int(np.argmax(contrasts)) if contrasts else 0


def _decode_with_pillow(image: Image.Image, orientation: int, side: int) -> np.ndarray:
    # A JPEG's draft decodes its DCT at 1/2, 1/4 or 1/8. A HEIF's decodes the thumbnail
    # a phone stores in the file when one is at least thumbnail-sized and a scaled copy of
    # the image (pillow-heif checks its shape, orientation and colour profile): a 12 MP
    # HEIC decodes whole in ~0.36 s on one core, from its thumbnail in ~6 ms.
    if image.format in ("JPEG", "MPO", "HEIF"):
        image.draft("RGB", _target_size(*image.size, side))
    image.load()
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    factor = _reduction(*image.size, side) if max(image.size) >= 2 * side else 1
    if image.mode in DEEP_GREY:  # reduced before any floating-point copy: a 96 MP scan's was 0.8 GB each
        samples = np.asarray(image)
        image, factor = Image.fromarray(_reduced_to_8bit(samples, factor)), 1
    elif image.mode not in ("RGB", "L"):
        image = _to_rgb(image)
    # Reduced as a JPEG's DCT decode is (a box average by 2, 4 or 8): a PNG or WebP copy
    # of a JPEG then gets a thumbnail of the JPEG's size, and measures alike (at 256 px
    # against the JPEG's 400, the same pixels read up to 3x sharper). A JPEG draft
    # already lands between `side` and twice that.
    if factor > 1:  # (a JPEG 2000 image's `reduce` is its levels setting)
        image = Image.Image.reduce(image, factor)
    if max(image.size) >= 2 * side:
        image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent images are composited on white, so a PNG logo and its JPEG copy match.
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """RGB pixels → JPEG bytes (OpenCV's encoder is the faster of the two here)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()

