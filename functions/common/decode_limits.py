"""Limits checked before a DICOM object is parsed or its pixel data decoded or allocated.

A hostile object can be small on the wire and huge in memory: a deflated data set
(PS3.5 A.5) that inflates 1000-fold, a header of a million tiny elements or empty
sequence items (each becomes a Python object), or a header declaring 8000 x 8000 x
1000 frames over a 1 MB RLE stream. Every decode path checks the numbers first:

- :func:`inflate` inflates a deflated data set with a bound on the *inflated* bytes
  (pydicom inflates in one unbounded ``zlib.decompress`` call);
- :func:`check_structure` walks the encoded data set (no allocation) and counts
  elements, sequence items and pixel data fragments, and nesting depth;
- :func:`read_part10` does both, then lets pydicom parse what passed;
- :func:`check_pixel_budget` refuses to decode frames whose decoded size
  (Rows x Columns x SamplesPerPixel x ceil(BitsAllocated / 8) x frames) exceeds a limit.

Every refusal raises :class:`LimitExceeded` with a message safe to return to a
caller (numbers only, no PHI): routes map it to 413 with a JSON reason, STOW to a
FailedSOPSequence reason. pydicom is imported only by :func:`read_part10`, so
importing this module costs nothing at cold start.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# Decoded pixel bytes one request may allocate: a 4096 x 4096 x 3 x 16-bit frame is 96 MiB.
MAX_DECODED_FRAME_BYTES = 96 * 1024 * 1024
# A data set may inflate to this many bytes (PS3.5 A.5). The same budget as a header in
# ingest (ingest.zip_part.MAX_HEADER_BYTES), so what STOW accepts, ingest indexes.
MAX_INFLATED_BYTES = 32 * 1024 * 1024
# Data elements at every nesting level. pydicom keeps ~300 bytes per element it reads, and
# ingest converts each to DICOM JSON: 200,000 stay under ~100 MB. A 3,000-frame enhanced
# multi-frame header (per-frame functional groups) has about 60,000.
MAX_ELEMENTS = 200_000
# Sequence items and encapsulated pixel data fragments (one Dataset object per item, ~1 KB).
MAX_ITEMS = 50_000
# Sequences within sequences (pydicom parses them recursively).
MAX_DEPTH = 24

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_ENCAPSULATED_PIXELS = 0x7FE00010
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
_DEFLATED = "1.2.840.10008.1.2.1.99"
_IMPLICIT_LITTLE = "1.2.840.10008.1.2"
_EXPLICIT_BIG = "1.2.840.10008.1.2.2"


class LimitExceeded(ValueError):
    """The object declares more than a limit allows (message safe to return, no PHI)."""


@dataclass(frozen=True)
class Limits:
    """The budgets of one parse; the defaults are the module's constants."""

    max_inflated_bytes: int = MAX_INFLATED_BYTES
    max_elements: int = MAX_ELEMENTS
    max_items: int = MAX_ITEMS
    max_depth: int = MAX_DEPTH


DEFAULT_LIMITS = Limits()


@dataclass
class Counts:
    """What :func:`check_structure` found: elements, items (and fragments), deepest nesting."""

    elements: int = 0
    items: int = 0
    depth: int = 0


def _int(header: Mapping[str, Any] | Any, keyword: str, default: int) -> int:
    value = header.get(keyword, default) if isinstance(header, Mapping) else getattr(header, keyword, default)
    try:
        number = int(value if value not in (None, "") else default)
    except (TypeError, ValueError) as exc:
        raise LimitExceeded(f"{keyword} is not a number") from exc
    if number < 0:
        raise LimitExceeded(f"{keyword} is negative")
    return number


def frame_bytes(header: Mapping[str, Any] | Any) -> int:
    """Decoded bytes of one frame: Rows x Columns x SamplesPerPixel x ceil(BitsAllocated / 8).

    ``header`` is a pydicom ``Dataset`` or a mapping of keyword to value (PS3.3 C.7.6.3).
    Raises :class:`LimitExceeded` when a value is not a non-negative number.
    """
    rows = _int(header, "Rows", 0)
    columns = _int(header, "Columns", 0)
    samples = _int(header, "SamplesPerPixel", 1)
    bits = _int(header, "BitsAllocated", 8)
    return rows * columns * samples * max(1, (bits + 7) // 8)


def number_of_frames(header: Mapping[str, Any] | Any) -> int:
    """NumberOfFrames (PS3.3 C.7.6.6), 1 when absent or empty; :class:`LimitExceeded` if not a number."""
    return max(1, _int(header, "NumberOfFrames", 1))


def check_pixel_budget(
    header: Mapping[str, Any] | Any, frames: int = 1, limit: int = MAX_DECODED_FRAME_BYTES
) -> int:
    """Refuse to decode ``frames`` frames of ``header`` if they exceed ``limit`` bytes.

    Returns the decoded size in bytes. Raises :class:`LimitExceeded` (map to 413 or a
    STOW failure reason) before anything is allocated.
    """
    size = frame_bytes(header) * max(1, frames)
    if size > limit:
        raise LimitExceeded(f"decoded pixels: {size} bytes > limit {limit}")
    return size


_INFLATE_STEP = 1024 * 1024


def _inflated_size(data: bytes | memoryview, limit: int) -> int:
    """Bytes ``data`` inflates to, counted a megabyte at a time; :class:`LimitExceeded` past ``limit``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = len(inflater.decompress(data, _INFLATE_STEP))
    while total <= limit and inflater.unconsumed_tail:
        total += len(inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP))
    if total > limit:
        raise LimitExceeded(f"deflated data set inflates beyond the limit of {limit} bytes")
    return total


def inflate(data: bytes | memoryview, limit: int = MAX_INFLATED_BYTES) -> bytearray:
    """Raw-deflate ``data`` (PS3.5 A.5: no zlib header), refusing more than ``limit`` inflated bytes.

    The size is counted first, a megabyte at a time, so a bomb costs a megabyte of memory
    before it is refused; then the output is inflated into a buffer of exactly that size.
    Raises :class:`LimitExceeded` over the limit, ``ValueError`` for corrupt data.
    """
    try:
        size = _inflated_size(data, limit)
        out = bytearray(size)
        view = memoryview(out)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        pos, tail = 0, data
        while pos < size:
            piece = inflater.decompress(tail, min(_INFLATE_STEP, size - pos))
            view[pos : pos + len(piece)] = piece
            pos += len(piece)
            tail = inflater.unconsumed_tail
            if not piece:
                break
    except zlib.error as exc:
        raise ValueError("corrupt deflated data set") from exc
    return out


# Top-level attributes the pixel budget needs, kept by check_part10 while it walks.
_IMAGE_PIXEL_TAGS = {
    0x00280002: "SamplesPerPixel",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
}


def _looks_like_vr(first: int, second: int) -> bool:
    """pydicom's test for an explicit VR: two bytes in A..Z."""
    return 0x40 < first < 0x5B and 0x40 < second < 0x5B


class _Walker:
    """Walks an encoded data set (PS3.5 7.1 and 7.5) without building anything, counting as it goes.

    It also keeps the top-level Image Pixel numbers (``image_pixel``) for the pixel budget.
    """

    def __init__(self, data: bytes | bytearray | memoryview, little_endian: bool, limits: Limits) -> None:
        self.data = data
        self.end = len(data)
        self.order = "<" if little_endian else ">"
        self.tag_length = struct.Struct(self.order + "HHI")
        self.short_length = struct.Struct(self.order + "H")
        self.limits = limits
        self.counts = Counts()
        self.image_pixel: dict[str, int] = {}
        # Whether the walk stopped at the top-level pixel data (the whole header was seen).
        self.at_pixels = False
        # Bytes (from the start of the data set) an element read so far extends to, past the data.
        self.wanted = 0

    def _tag(self, pos: int) -> int:
        group, element, _ = self.tag_length.unpack_from(self.data, pos)
        return int(group << 16 | element)

    def _element(self) -> None:
        self.counts.elements += 1
        if self.counts.elements > self.limits.max_elements:
            raise LimitExceeded(f"more than {self.limits.max_elements} data elements")

    def _item(self) -> None:
        self.counts.items += 1
        if self.counts.items > self.limits.max_items:
            raise LimitExceeded(f"more than {self.limits.max_items} sequence items or fragments")

    def dataset(self, pos: int, end: int, implicit: bool, depth: int, stop_at_pixels: bool) -> int:
        """Walk elements from ``pos`` to ``end``; return the position after the last one read.

        As pydicom does, the first element of each data set decides between implicit and
        explicit VR (an item in an implicit VR sequence stays implicit).
        """
        if (depth == 0 or not implicit) and pos + 6 <= end:
            implicit = not _looks_like_vr(self.data[pos + 4], self.data[pos + 5])
        while pos + 8 <= end:
            group, element, length = self.tag_length.unpack_from(self.data, pos)
            tag = group << 16 | element
            if tag == _ITEM_END:
                return pos + 8
            if tag in (_ITEM, _SEQUENCE_END):
                return pos  # malformed here: pydicom says so
            if stop_at_pixels and depth == 0 and tag in _PIXEL_TAGS:
                self.at_pixels = True
                return pos
            self._element()
            vr, length, start = self._header(pos, length, implicit)
            if length != _UNDEFINED and start + length > self.end:
                self.wanted = max(self.wanted, start + length)
            if start > end:
                return end
            if depth == 0 and tag in _IMAGE_PIXEL_TAGS and length <= 16 and start + length <= end:
                self._keep(tag, bytes(self.data[start : start + length]))
            if length == _UNDEFINED:
                if tag == _ENCAPSULATED_PIXELS and depth == 0:
                    pos = self.fragments(start, end)
                else:
                    # SQ, or UN / implicit of undefined length: items in implicit VR (PS3.5 6.2.2).
                    pos = self.items(start, end, implicit or vr == b"UN", depth + 1)
                continue
            stop = min(start + length, end)
            if vr == b"SQ" or (
                vr in (b"", b"UN") and length >= 8 and start + 8 <= end and self._tag(start) == _ITEM
            ):
                self.items(start, stop, implicit or vr == b"UN", depth + 1)
            pos = start + length
        return min(pos, end)

    def _header(self, pos: int, length: int, implicit: bool) -> tuple[bytes, int, int]:
        """(VR or b"" when implicit, value length, value position) of the element at ``pos``."""
        if implicit:
            return b"", length, pos + 8
        vr = bytes(self.data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > self.end:
                return vr, 0, pos + 12
            return vr, int(struct.unpack_from(self.order + "I", self.data, pos + 8)[0]), pos + 12
        return vr, int(self.short_length.unpack_from(self.data, pos + 6)[0]), pos + 8

    def _keep(self, tag: int, value: bytes) -> None:
        """A top-level Image Pixel number (US, or IS for NumberOfFrames); unreadable ones stay out."""
        try:
            if tag == 0x00280008:
                number = int(value.strip(b" \x00") or b"1")
            elif len(value) == 2:
                number = int(self.short_length.unpack(value)[0])
            else:
                return
        except ValueError:
            return
        self.image_pixel[_IMAGE_PIXEL_TAGS[tag]] = number

    def items(self, pos: int, end: int, implicit: bool, depth: int) -> int:
        """Walk sequence items until the sequence delimiter or ``end``."""
        self.counts.depth = max(self.counts.depth, depth)
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"sequences nested deeper than {self.limits.max_depth} levels")
        while pos + 8 <= end:
            group, element, length = self.tag_length.unpack_from(self.data, pos)
            tag = group << 16 | element
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM:
                return pos
            self._item()
            if length == _UNDEFINED:
                pos = self.dataset(pos + 8, end, implicit, depth, stop_at_pixels=False)
            else:
                self.dataset(pos + 8, min(pos + 8 + length, end), implicit, depth, stop_at_pixels=False)
                pos += 8 + length
        return min(pos, end)

    def fragments(self, pos: int, end: int) -> int:
        """Count the items of encapsulated pixel data (PS3.5 A.4): offset table and fragments."""
        while pos + 8 <= end:
            group, element, length = self.tag_length.unpack_from(self.data, pos)
            tag = group << 16 | element
            if tag == _SEQUENCE_END or tag != _ITEM or length == _UNDEFINED:
                return pos + 8
            self._item()
            pos += 8 + length
        return min(pos, end)


def check_structure(
    data: bytes | memoryview,
    *,
    implicit_vr: bool,
    little_endian: bool = True,
    limits: Limits = DEFAULT_LIMITS,
    stop_at_pixels: bool = False,
) -> Counts:
    """Count the elements, items and nesting of an encoded data set before anything parses it.

    ``data`` is the data set after the file meta information (PS3.10 7.1), already inflated.
    Walks the bytes only (no allocation per element). Raises :class:`LimitExceeded` at the
    first count over ``limits``; a truncated or malformed data set is left for the parser
    to report. ``stop_at_pixels`` stops at the top-level pixel data, as pydicom's
    ``stop_before_pixels`` does.
    """
    walker = _Walker(data, little_endian, limits)
    _walk(walker, implicit_vr, stop_at_pixels)
    return walker.counts


def _walk(walker: _Walker, implicit_vr: bool, stop_at_pixels: bool) -> None:
    stopped = walker.dataset(0, walker.end, implicit_vr, 0, stop_at_pixels)
    rest = walker.end - stopped
    if rest >= 8 and not (stop_at_pixels and walker._tag(stopped) in _PIXEL_TAGS):
        # The walk ended at something malformed: whatever pydicom makes of the rest, it cannot
        # hold more elements than 8-byte pieces, so those are counted.
        walker.counts.elements += rest // 8
        if walker.counts.elements > walker.limits.max_elements:
            raise LimitExceeded(f"more than {walker.limits.max_elements} data elements")


def _encoding(data: bytes, start: int, transfer_syntax: str | None) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the data set at ``start``."""
    if transfer_syntax == _IMPLICIT_LITTLE:
        return True, True
    if transfer_syntax == _EXPLICIT_BIG:
        return False, False
    if transfer_syntax:
        return False, True
    # No transfer syntax: guess as pydicom does, from whether the first element has a VR,
    # and big endian for an explicit VR whose group reads as 1024 or more little endian.
    if len(data) < start + 6 or not _looks_like_vr(data[start + 4], data[start + 5]):
        return True, True
    return False, int.from_bytes(data[start : start + 2], "little") < 1024


def _walk_part10(data: bytes, stop_before_pixels: bool, limits: Limits) -> _Walker:
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(data)
    transfer_syntax: str | None = None
    try:
        read_preamble(fp, True)
        meta = _read_file_meta_info(fp)
        transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "") or None
    except Exception:  # no usable file meta: the parser says what is wrong
        fp.seek(0)
    start = fp.tell()
    if transfer_syntax == _DEFLATED:
        inflated = inflate(memoryview(data)[start:], limits.max_inflated_bytes)
        walker = _Walker(inflated, True, limits)
        _walk(walker, False, stop_before_pixels)
    else:
        implicit, little = _encoding(data, start, transfer_syntax)
        walker = _Walker(memoryview(data)[start:], little, limits)
        _walk(walker, implicit, stop_before_pixels)
    return walker


def check_part10(data: bytes, *, stop_before_pixels: bool, limits: Limits = DEFAULT_LIMITS) -> dict[str, int]:
    """Check a DICOM file (PS3.10; without preamble or meta too) against ``limits`` before parsing.

    A deflated data set is inflated with a bound, then the encoded data set is walked by
    :func:`check_structure`. Returns the top-level Image Pixel numbers found (keywords
    ``Rows``, ``Columns``, ``SamplesPerPixel``, ``BitsAllocated``, ``NumberOfFrames``),
    ready for :func:`check_pixel_budget`. Raises :class:`LimitExceeded` over a limit and
    ``ValueError`` for a corrupt deflate stream; anything else is left for the parser.
    """
    return _walk_part10(data, stop_before_pixels, limits).image_pixel


class Readable(Protocol):
    """A seekable binary file, as pydicom reads it."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all that remain when negative)."""

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move to ``offset`` relative to ``whence`` (io.SEEK_*); returns the new position."""

    def tell(self) -> int:
        """The current position in bytes."""


def check_header_stream(
    fp: Readable,
    *,
    limits: Limits = DEFAULT_LIMITS,
    first_read: int = 64 * 1024,
    max_bytes: int = MAX_INFLATED_BYTES,
) -> dict[str, int]:
    """:func:`check_part10` (stopping before the pixel data) of a file read only as far as its header.

    Reads grow fourfold from ``first_read`` until the walk reaches the pixel data, the file
    ends, or ``max_bytes`` were read; ``fp`` is left where it was. For readers that fetch
    lazily (ingest's zip members): an element bomb is refused after its first megabytes.
    """
    start = fp.tell()
    data = b""
    want = first_read
    try:
        while True:
            piece = fp.read(want - len(data))
            data += piece
            walker = _walk_part10(data, True, limits)
            if walker.at_pixels or len(data) < want or want >= max_bytes or walker.wanted > max_bytes:
                # Done, or an element longer than the budget: the parser refuses that one by size.
                return walker.image_pixel
            want = min(want * 4, max_bytes)
    finally:
        fp.seek(start)


def read_part10(data: bytes, *, stop_before_pixels: bool, limits: Limits = DEFAULT_LIMITS) -> Dataset:
    """Parse a DICOM file with pydicom once :func:`check_part10` found it within ``limits``.

    Raises :class:`LimitExceeded` over a limit, or pydicom's errors (``InvalidDicomError``,
    ``ValueError``, ``EOFError``...) for what is not DICOM.
    """
    from pydicom import dcmread

    check_part10(data, stop_before_pixels=stop_before_pixels, limits=limits)
    # A deflated data set is inflated once more by pydicom, now known to be bounded.
    return dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
