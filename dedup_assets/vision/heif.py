"""A HEIF file's compression, from its coded picture's headers: a HEIC's HEVC (ISO/IEC
23008-12, ITU-T H.265), an AVIF's AV1 (AOMedia's AV1 specification).

Pillow decodes both (HEIC through pillow-heif) but does not say how hard they were
compressed, and without that a phone's original HEIC ranked below its own JPEG export,
and a CDN's coarse AVIF above the JPEG it came from, when picking the copy to keep. The
quantiser of the picture's first coded tile sits in the first bytes of its data, behind
the parameter sets in the file's `hvcC` or `av1C` box or before it in the data: reading
it costs ~0.1 ms and no decode. A HEIC's QP doubles the quantiser's step every 6; an
encoder may move it per block (adaptive quantisation) around this base.
"""

from __future__ import annotations

import struct

import numpy as np

_VPS, _SPS, _PPS = 32, 33, 34
_IDR_W_RADL, _IDR_N_LP = 19, 20
_I_SLICE = 2
_HEADER_BYTES = 64  # enough for a slice's or an AV1 frame's header up to its quantiser
# The JPEG quality whose SSIM to the original first reaches the HEIC's, by QP:
# the median over the shipped photos, each encoded by libheif's x265 at every second
# quality setting, 0-100 (SSIM of RGB; a HEIC finer than JPEG's 100 counts as 100).
# Coarser than QP 42, JPEG's 10 or lower.
_JPEG_EQUIVALENT_BY_QP = tuple(enumerate((
    100, 100, 100, 100, 99, 99, 99, 99, 99, 98, 98, 98, 97, 97, 96, 96, 95, 94, 93, 92, 90, 88, 86, 85, 82, 79, 74,
    70, 69, 65, 56, 48, 39, 31, 26, 23, 20, 17, 14, 13, 12, 12, 10)))

# The same for an AVIF, by its base quantiser index (libavif's AV1 encoder at every fourth
# quality setting, 0-100). Between points both are interpolated, beyond them clamped.
_JPEG_EQUIVALENT_BY_Q_INDEX = ((0, 100), (12, 98), (24, 97), (36, 95), (48, 94), (60, 93), (72, 91), (84, 89),
                               (96, 87), (108, 82), (120, 80), (132, 75), (144, 68), (156, 57), (164, 42),
                               (172, 37), (184, 30), (192, 25), (200, 22), (208, 18), (216, 17), (224, 15),
                               (232, 13), (240, 12), (249, 10), (255, 10))


class _Bits:
    """Big-endian bit reader with H.265's Exp-Golomb codes (§9.2)."""

    def __init__(self, data: bytes):
        self._data, self._position = data, 0

    def u(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self._data[self._position >> 3]  # IndexError past the end: not a header
            value = (value << 1) | ((byte >> (7 - (self._position & 7))) & 1)
            self._position += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _payload(nal: bytes) -> bytes:
    """A NAL unit's bytes after its 2-byte header, emulation prevention bytes removed."""
    return nal[2:].replace(b"\x00\x00\x03", b"\x00\x00")


def _nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of each box in data[start:end]."""
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack(">I4s", data[position:position + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[position + 8:position + 16])
            header = 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            return
        yield kind, position + header, position + size
        position += size


def _uint(data: bytes, position: int, size: int) -> int:
    return int.from_bytes(data[position:position + size], "big") if size else 0


class _Items:
    """The `meta` box's items: their types, references, properties and extents."""

    def __init__(self, data: bytes):
        self.data = data
        self.primary: int | None = None
        self.types: dict[int, bytes] = {}
        self.derived_from: dict[int, list[int]] = {}
        self.properties: list[tuple[bytes, int, int]] = []
        self.associations: dict[int, list[int]] = {}
        # Construction method, the first extent's offset and length.
        self.extents: dict[int, tuple[int, int, int]] = {}
        self.idat: tuple[int, int] | None = None
        for kind, start, end in _boxes(data, 0, len(data)):
            if kind == b"meta":
                self._read_meta(start + 4, end)

    def _read_meta(self, start: int, end: int) -> None:
        data = self.data
        for kind, begin, finish in _boxes(data, start, end):
            version = data[begin]
            if kind == b"pitm":
                self.primary = _uint(data, begin + 4, 2 if version == 0 else 4)
            elif kind == b"iinf":
                for entry, entry_begin, _ in _boxes(data, begin + (6 if version == 0 else 8), finish):
                    entry_version = data[entry_begin]
                    if entry == b"infe" and entry_version >= 2:
                        id_size = 2 if entry_version == 2 else 4
                        item = _uint(data, entry_begin + 4, id_size)
                        type_at = entry_begin + 4 + id_size + 2
                        self.types[item] = data[type_at:type_at + 4]
            elif kind == b"iref":
                id_size = 2 if version == 0 else 4
                for reference, ref_begin, _ in _boxes(data, begin + 4, finish):
                    if reference == b"dimg":
                        source = _uint(data, ref_begin, id_size)
                        count = _uint(data, ref_begin + id_size, 2)
                        first = ref_begin + id_size + 2
                        self.derived_from[source] = [_uint(data, first + i * id_size, id_size) for i in range(count)]
            elif kind == b"iprp":
                for part, part_begin, part_end in _boxes(data, begin, finish):
                    if part == b"ipco":
                        self.properties = list(_boxes(data, part_begin, part_end))
                    elif part == b"ipma":
                        self._read_associations(part_begin)
            elif kind == b"iloc":
                self._read_locations(begin)
            elif kind == b"idat":
                self.idat = (begin, finish)

    def _read_associations(self, begin: int) -> None:
        data = self.data
        version, flags = data[begin], _uint(data, begin + 1, 3)
        position, entries = begin + 8, _uint(data, begin + 4, 4)
        for _ in range(entries):
            id_size = 2 if version < 1 else 4
            item = _uint(data, position, id_size)
            count = data[position + id_size]
            position += id_size + 1
            indices = []
            for _ in range(count):
                if flags & 1:
                    indices.append(_uint(data, position, 2) & 0x7FFF)
                    position += 2
                else:
                    indices.append(data[position] & 0x7F)
                    position += 1
            self.associations[item] = indices

    def _read_locations(self, begin: int) -> None:
        data = self.data
        version = data[begin]
        offset_size, length_size = data[begin + 4] >> 4, data[begin + 4] & 15
        base_size, index_size = data[begin + 5] >> 4, (data[begin + 5] & 15) if version in (1, 2) else 0
        position = begin + 6
        count_size = 2 if version < 2 else 4
        count = _uint(data, position, count_size)
        position += count_size
        for _ in range(count):
            item = _uint(data, position, count_size)
            position += count_size
            method = 0
            if version in (1, 2):
                method = _uint(data, position, 2) & 15
                position += 2
            position += 2  # data_reference_index
            base = _uint(data, position, base_size)
            position += base_size
            extents = _uint(data, position, 2)
            position += 2
            for number in range(extents):
                position += index_size
                if number == 0:  # a picture's first NAL unit or OBUs lie in its first extent
                    offset = _uint(data, position, offset_size)
                    self.extents[item] = (method, base + offset, _uint(data, position + offset_size, length_size))
                position += offset_size + length_size

    def first_extent(self, item: int) -> tuple[int, int]:
        """Where the item's coded data starts in the file, and where its first extent ends."""
        method, offset, length = self.extents[item]
        origin = self.idat[0] if method == 1 and self.idat else 0
        return origin + offset, min(origin + offset + length, len(self.data))

    def property_of(self, item: int, kind: bytes) -> tuple[int, int] | None:
        for index in self.associations.get(item, []):
            if 0 < index <= len(self.properties) and self.properties[index - 1][0] == kind:
                return self.properties[index - 1][1:]
        return None


def _parameter_sets(data: bytes, start: int, end: int) -> tuple[int, dict[int, bytes]]:
    """The NAL length size and the first VPS, SPS and PPS of an `hvcC` box."""
    length_size = (data[start + 21] & 3) + 1
    position, arrays = start + 23, data[start + 22]
    sets: dict[int, bytes] = {}
    for _ in range(arrays):
        kind, count = data[position] & 0x3F, _uint(data, position + 1, 2)
        position += 3
        for _ in range(count):
            size = _uint(data, position, 2)
            sets.setdefault(kind, data[position + 2:position + 2 + size])
            position += 2 + size
    return length_size, sets


def _skip_profile_tier_level(bits: _Bits, max_sub_layers_minus1: int) -> None:
    bits.u(96)  # general profile, tier, compatibility and constraint flags, level
    present = [(bits.u(1), bits.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        bits.u(2 * (8 - max_sub_layers_minus1))
    for profile, level in present:
        bits.u(88 * profile + 8 * level)


def _skip_scaling_list_data(bits: _Bits) -> None:
    for size in range(4):
        for _ in range(0, 6, 3 if size == 3 else 1):
            if not bits.u(1):  # scaling_list_pred_mode_flag: copied from another
                bits.ue()
                continue
            coefficients = min(64, 1 << (4 + (size << 1)))
            if size > 1:
                bits.se()  # DC coefficient
            for _ in range(coefficients):
                bits.se()


def _sequence_facts(sps: bytes) -> dict[str, int]:
    """What the first slice header's layout depends on (H.265 §7.3.2.2)."""
    bits = _Bits(_payload(sps))
    bits.u(4)
    max_sub_layers_minus1 = bits.u(3)
    bits.u(1)
    _skip_profile_tier_level(bits, max_sub_layers_minus1)
    bits.ue()
    chroma_format = bits.ue()
    separate_planes = bits.u(1) if chroma_format == 3 else 0
    bits.ue(), bits.ue()  # width, height
    if bits.u(1):  # conformance window
        for _ in range(4):
            bits.ue()
    deeper_luma = bits.ue()  # bit_depth_luma_minus8
    bits.ue()
    bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    ordering_for_all = bits.u(1)
    for _ in range(0 if ordering_for_all else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        bits.ue(), bits.ue(), bits.ue()
    for _ in range(6):  # coding and transform block sizes, transform depths
        bits.ue()
    if bits.u(1) and bits.u(1):  # scaling lists enabled, and sent in the SPS
        _skip_scaling_list_data(bits)
    bits.u(1)  # amp
    return {"deeper_luma": deeper_luma, "separate_planes": separate_planes,
            "chroma": 0 if separate_planes else chroma_format, "sao": bits.u(1)}


def _picture_facts(pps: bytes) -> dict[str, int]:
    """H.265 §7.3.2.3, up to init_qp_minus26."""
    bits = _Bits(_payload(pps))
    bits.ue(), bits.ue()
    bits.u(1)  # dependent slice segments
    output_flag = bits.u(1)
    extra_bits = bits.u(3)
    bits.u(1), bits.u(1)  # sign data hiding, cabac init
    bits.ue(), bits.ue()  # default reference counts
    return {"output_flag": output_flag, "extra_bits": extra_bits, "init_qp": 26 + bits.se()}


def _slice_qp(nal: bytes, sequence: dict[str, int], picture: dict[str, int]) -> int | None:
    """The first I slice's QP of an IDR picture (H.265 §7.3.6.1); None for other layouts."""
    nal_type = _nal_type(nal)
    if nal_type not in (_IDR_W_RADL, _IDR_N_LP):
        return None  # other pictures carry order counts and reference sets before the QP
    bits = _Bits(_payload(nal))
    if not bits.u(1):  # first_slice_segment_in_pic_flag
        return None
    bits.u(1)  # no_output_of_prior_pics_flag, as in every random-access picture
    bits.ue()
    bits.u(picture["extra_bits"])
    if bits.ue() != _I_SLICE:
        return None
    if picture["output_flag"]:
        bits.u(1)
    if sequence["separate_planes"]:
        bits.u(2)
    if sequence["sao"]:
        bits.u(1)
        if sequence["chroma"]:
            bits.u(1)
    return picture["init_qp"] + bits.se()


def _first_coded_tile(data: bytes) -> tuple[_Items, int] | None:
    """The primary image's item, or the first it derives from if it is a grid of tiles or
    an overlay of images, with its coded data."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    items = _Items(data)
    item = items.primary
    if item is not None and items.types.get(item) in (b"grid", b"iovl"):
        item = (items.derived_from.get(item) or [None])[0]
    if item is None or item not in items.extents:
        return None
    return items, item


def _hevc_qp(data: bytes, items: _Items, item: int) -> int | None:
    config = items.property_of(item, b"hvcC")
    if config is None:
        return None
    length_size, sets = _parameter_sets(data, *config)
    if _SPS not in sets or _PPS not in sets:
        return None
    position, end = items.first_extent(item)
    while position + length_size <= end:  # NAL units, each after its length
        size = _uint(data, position, length_size)
        start, position = position + length_size, position + length_size + size
        if size > 2 and _nal_type(data[start:start + 1]) < _VPS:  # the first coded slice
            # Only its header is read: the slice's data may be megabytes.
            nal = data[start:min(start + size, start + 2 + _HEADER_BYTES)]
            sequence = _sequence_facts(sets[_SPS])
            qp = _slice_qp(nal, sequence, _picture_facts(sets[_PPS]))
            # Deeper samples allow finer QPs, below 0: the same QP is the same step relative
            # to the samples' range (x265 at one setting: the same QP and SSIM at 8 and 10 bits).
            return qp if qp is not None and -6 * sequence["deeper_luma"] <= qp <= 51 else None
    return None


# AV1 (AVIF): AOMedia's AV1 Bitstream & Decoding Process Specification, §5.
_OBU_SEQUENCE_HEADER, _OBU_FRAME_HEADER, _OBU_FRAME = 1, 3, 6


def _leb128(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for index in range(8):
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, position + index + 1
    raise ValueError("LEB128 longer than 8 bytes")


def _obus(data: bytes, position: int, end: int):
    """(type, payload start, payload end) of each OBU in data[position:end] (§5.3)."""
    while position < end:
        header = data[position]
        kind, extension, has_size = (header >> 3) & 15, (header >> 2) & 1, (header >> 1) & 1
        position += 1 + extension
        size, position = _leb128(data, position) if has_size else (end - position, position)
        yield kind, position, min(position + size, end)
        position += size


def _av1_sequence(payload: bytes) -> dict[str, int] | None:
    """What a still picture's frame header layout depends on (§5.5); None unless the
    sequence uses the reduced still-picture header (libavif's for a single image)."""
    bits = _Bits(payload)
    bits.u(3)  # seq_profile
    bits.u(1)  # still_picture
    if not bits.u(1):  # reduced_still_picture_header
        return None
    bits.u(5)  # seq_level_idx
    width_bits, height_bits = bits.u(4) + 1, bits.u(4) + 1
    width, height = bits.u(width_bits) + 1, bits.u(height_bits) + 1
    big_superblocks = bits.u(1)
    bits.u(1), bits.u(1)  # filter intra, intra edge filter
    return {"width": width, "height": height, "big_superblocks": big_superblocks, "superres": bits.u(1)}


def _tile_log2(block: int, target: int) -> int:
    k = 0
    while (block << k) < target:
        k += 1
    return k


def _non_symmetric(bits: _Bits, n: int) -> int:
    width = n.bit_length()
    extra = (1 << width) - n
    value = bits.u(width - 1)
    return value if value < extra else (value << 1) - extra + bits.u(1)


def _skip_tile_info(bits: _Bits, width: int, height: int, big_superblocks: int) -> None:
    """§5.9.15, for a frame of width x height."""
    mi_cols, mi_rows = 2 * ((width + 7) >> 3), 2 * ((height + 7) >> 3)
    shift = 5 if big_superblocks else 4
    sb_cols, sb_rows = (mi_cols + (1 << shift) - 1) >> shift, (mi_rows + (1 << shift) - 1) >> shift
    sb_size = shift + 2
    max_tile_width_sb, max_tile_area_sb = 4096 >> sb_size, (4096 * 2304) >> (2 * sb_size)
    min_log2_cols = _tile_log2(max_tile_width_sb, sb_cols)
    max_log2_cols, max_log2_rows = _tile_log2(1, min(sb_cols, 64)), _tile_log2(1, min(sb_rows, 64))
    min_log2_tiles = max(min_log2_cols, _tile_log2(max_tile_area_sb, sb_rows * sb_cols))
    if bits.u(1):  # uniform_tile_spacing_flag
        cols_log2 = min_log2_cols
        while cols_log2 < max_log2_cols and bits.u(1):
            cols_log2 += 1
        rows_log2 = max(min_log2_tiles - cols_log2, 0)
        while rows_log2 < max_log2_rows and bits.u(1):
            rows_log2 += 1
    else:
        start, widest, cols = 0, 0, 0
        while start < sb_cols:
            size = _non_symmetric(bits, min(sb_cols - start, max_tile_width_sb)) + 1
            widest, start, cols = max(widest, size), start + size, cols + 1
        area = (sb_rows * sb_cols) >> (min_log2_tiles + 1) if min_log2_tiles else sb_rows * sb_cols
        max_height = max(area // widest, 1)
        start, rows = 0, 0
        while start < sb_rows:
            start, rows = start + _non_symmetric(bits, min(sb_rows - start, max_height)) + 1, rows + 1
        cols_log2, rows_log2 = _tile_log2(1, cols), _tile_log2(1, rows)
    if cols_log2 or rows_log2:
        bits.u(cols_log2 + rows_log2 + 2)  # context_update_tile_id, tile_size_bytes_minus_1


def _av1_base_q_idx(payload: bytes, sequence: dict[str, int]) -> int:
    """A reduced still picture's frame header up to base_q_idx (§5.9.2, §5.9.12)."""
    bits = _Bits(payload)
    bits.u(1)  # disable_cdf_update
    screen_tools = bits.u(1)  # allow_screen_content_tools (the sequence leaves it to the frame)
    if screen_tools:
        bits.u(1)  # force_integer_mv
    width = sequence["width"]
    if sequence["superres"] and bits.u(1):  # use_superres: coded narrower, upscaled after
        denominator = bits.u(3) + 9
        width = (width * 8 + denominator // 2) // denominator
    if bits.u(1):  # render_and_frame_size_different
        bits.u(32)
    if screen_tools and width == sequence["width"]:
        bits.u(1)  # allow_intrabc
    _skip_tile_info(bits, width, sequence["height"], sequence["big_superblocks"])
    return bits.u(8)


def _av1_q_index(data: bytes, items: _Items, item: int) -> int | None:
    position, end = items.first_extent(item)
    sequence = None
    config = items.property_of(item, b"av1C")  # may hold the sequence header too
    for kind, begin, finish in _obus(data, config[0] + 4, config[1]) if config else ():
        if kind == _OBU_SEQUENCE_HEADER:
            sequence = _av1_sequence(data[begin:finish])
    for kind, begin, finish in _obus(data, position, end):
        if kind == _OBU_SEQUENCE_HEADER:
            sequence = _av1_sequence(data[begin:finish])
        elif kind in (_OBU_FRAME_HEADER, _OBU_FRAME):
            if sequence is None:
                return None
            return _av1_base_q_idx(data[begin:min(finish, begin + _HEADER_BYTES)], sequence)
    return None


_READERS = {b"hvc1": _hevc_qp, b"av01": _av1_q_index}


def _quantiser(data: bytes) -> tuple[bytes, int] | None:
    """The primary image's codec (b"hvc1", b"av01") and its first coded tile's quantiser."""
    try:
        found = _first_coded_tile(data)
        codec = found[0].types.get(found[1]) if found else None
        value = _READERS[codec](data, *found) if codec in _READERS else None
    except (IndexError, ValueError, struct.error, KeyError):
        return None
    return None if value is None else (codec, value)


def heif_quantiser(data: bytes) -> int | None:
    """The base QP (0 finest - 51 coarsest; down to -12 at 10 bits) of a HEIC's primary
    image's first coded tile, or None when the file is not an HEVC-coded HEIF image this
    reader follows."""
    found = _quantiser(data)
    return found[1] if found and found[0] == b"hvc1" else None


def avif_quantiser(data: bytes) -> int | None:
    """The base quantiser index (0 finest - 255 coarsest) of an AVIF's primary image's
    first coded tile, or None when the file is not one this reader follows."""
    found = _quantiser(data)
    return found[1] if found and found[0] == b"av01" else None


_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}


def is_heif_container(data: bytes) -> bool:
    """Whether the file declares itself HEIF (HEIC, AVIF) in its leading `ftyp` box."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    size = min(int.from_bytes(data[:4], "big"), len(data))
    brands = [data[8:12]] + [data[i:i + 4] for i in range(16, size - 3, 4)]
    return any(brand in _HEIF_BRANDS for brand in brands)


def estimate_heif_quality(data: bytes) -> int | None:
    """A HEIC's or an AVIF's compression on the JPEG quality scale, by its quantiser."""
    found = _quantiser(data)
    if found is None:
        return None
    codec, value = found
    points = _JPEG_EQUIVALENT_BY_QP if codec == b"hvc1" else _JPEG_EQUIVALENT_BY_Q_INDEX
    return round(float(np.interp(value, *zip(*points))))
