"""Where each frame of an instance is inside its zip member, and the frame's bytes (PS3.5 A.4, PS3.18 10.4).

A *pixel layout* says where the Pixel Data value starts inside the member and, for
encapsulated transfer syntaxes, the byte span of each frame's fragments (item
headers included). A frame is then ONE ranged GET of that span (native: computed
from Rows x Columns x SamplesPerPixel x BitsAllocated; encapsulated: fragments
found by one walk over their item headers, grouped into frames by the Basic or
Extended Offset Table, or by the start markers of the codestreams).

Single-frame instances need no layout from S3: their member is about one frame
plus the header, so the member is read whole (one GET) and parsed in memory.
Multi-frame layouts are computed once, lazily, and cached in S3 under
``frame-index/`` (and in this process), keyed by the member's position, so a new
version of the instance gets a new layout.

pydicom is imported only here (when a frame is asked for), not at cold start.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any, cast

from common.s3_reader import S3RangeReader, SeekableReader
from common.zip_members import MemberLocation, MemberReader

from query.accept import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from query.pixel_layout import FrameError, PixelLayout

FRAME_INDEX_PREFIX = "frame-index/"
_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
# Codestream start markers: JPEG SOI, JPEG 2000 SOC, JPEG XL codestream.
_FRAME_STARTS = (b"\xff\xd8", b"\xff\x4f", b"\xff\x0a")
_CACHED_LAYOUTS = 512
# A multi-frame header (Enhanced CT/MR functional groups) can be MBs; read it in blocks this big.
_HEADER_BLOCK = 64 * 1024


def fragments_payload(block: bytes) -> bytes:
    """The concatenated fragment values of the items in ``block`` (stops at a sequence delimiter)."""
    out = bytearray()
    pos = 0
    while pos + 8 <= len(block):
        tag, length = block[pos : pos + 4], struct.unpack_from("<I", block, pos + 4)[0]
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM:
            raise FrameError("encapsulated pixel data: item tag expected")
        out += block[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return bytes(out)


class _Window(SeekableReader):
    """Bytes ``base .. base+size`` of an object as a seekable file (a STORED member's data)."""

    def __init__(self, reader: S3RangeReader, base: int, size: int) -> None:
        super().__init__()
        self._reader = reader
        self._base = base
        self._size = size

    def _length(self) -> int:
        return self._size

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self._size - self._pos))
        if wanted <= 0:
            return 0
        self._reader.seek(self._base + self._pos)
        got = self._reader.readinto(view[:wanted])
        self._pos += got
        return got


def _decoder_header(ds: Any) -> dict[str, Any]:
    keywords = (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "PlanarConfiguration",
    )
    header: dict[str, Any] = {}
    for keyword in keywords:
        value = ds.get(keyword)
        if value is not None and value != "":
            header[keyword] = str(value) if keyword == "PhotometricInterpretation" else int(value)
    return header


def _frame_count(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError) as exc:
        raise FrameError("NumberOfFrames is not a number") from exc


def _pixel_element(fp: IO[bytes], ts: str) -> tuple[int, int]:
    """(offset of the value, value length) of the Pixel Data element at ``fp``'s position."""
    element = fp.tell()
    head = fp.read(12)
    fmt = "<" if ts != EXPLICIT_VR_BIG_ENDIAN else ">"
    if len(head) < 8 or struct.unpack_from(f"{fmt}HH", head) != (0x7FE0, 0x0010):
        raise FrameError("the instance has no pixel data")
    if ts == IMPLICIT_VR_LITTLE_ENDIAN:
        return element + 8, int(struct.unpack_from("<I", head, 4)[0])
    if head[4:6] in (b"OB", b"OW", b"UN", b"OV", b"OF", b"OD", b"OL", b"UT", b"SQ"):
        return element + 12, int(struct.unpack_from(f"{fmt}I", head, 8)[0])
    return element + 8, int(struct.unpack_from(f"{fmt}H", head, 6)[0])


def parse_layout(fp: IO[bytes], size: int) -> PixelLayout:
    """The pixel layout of a Part 10 instance readable from ``fp`` (``size`` bytes).

    Reads the header up to Pixel Data, the element header, and for encapsulated data the
    item headers of the fragments (seeking over their values). Raises FrameError when
    there is no Pixel Data or the data cannot be addressed by frame.
    """
    from pydicom import dcmread
    from pydicom.encaps import parse_basic_offsets, parse_fragments

    try:
        ds = dcmread(fp, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise FrameError(f"unreadable DICOM header: {type(exc).__name__}") from exc
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or IMPLICIT_VR_LITTLE_ENDIAN)
    if ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        raise FrameError("deflated data set: frames cannot be addressed")
    value, length = _pixel_element(fp, ts)
    fmt = "<" if ts != EXPLICIT_VR_BIG_ENDIAN else ">"
    frames = _frame_count(ds)
    header = _decoder_header(ds)
    if length != 0xFFFFFFFF:
        if value + length > size:
            raise FrameError("pixel data beyond the end of the instance")
        bits = int(header.get("BitsAllocated", 8))
        frame_bits = (
            int(header.get("Rows", 0))
            * int(header.get("Columns", 0))
            * int(header.get("SamplesPerPixel", 1))
            * bits
        )
        if frame_bits == 0 or frame_bits % 8:
            raise FrameError("frames are not whole bytes (BitsAllocated 1): cannot be addressed by frame")
        frame_length = frame_bits // 8
        if frame_length * frames > length:
            raise FrameError("pixel data shorter than NumberOfFrames frames")
        return PixelLayout(ts, frames, value, length, False, frame_length=frame_length, header=header)
    fp.seek(value)
    try:
        basic = parse_basic_offsets(fp, endianness=fmt)
        first = fp.tell()
        count, positions = parse_fragments(fp, endianness=fmt)
    except (ValueError, struct.error) as exc:
        raise FrameError(f"encapsulated pixel data unreadable: {exc}") from exc
    if not count:
        raise FrameError("encapsulated pixel data without fragments")
    fragment_ends = []
    for position in positions:
        fp.seek(position + 4)
        fragment_ends.append(position + 8 + struct.unpack(f"{fmt}I", fp.read(4))[0])
    starts = _frame_starts(ds, fp, frames, basic, first, positions)
    spans = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else fragment_ends[-1]
        spans.append([start, end])
    return PixelLayout(ts, frames, value, length, True, spans=spans, header=header)


def _frame_starts(
    ds: Any, fp: IO[bytes], frames: int, basic: list[int], first: int, positions: list[int]
) -> list[int]:
    """Offset of the first item of each frame: offset tables first, then 1:1, then codestream markers."""
    extended = ds.get("ExtendedOffsetTable")
    if extended:
        offsets = list(struct.unpack(f"<{len(extended) // 8}Q", extended))
        if len(offsets) == frames:
            return [first + o for o in offsets]
    if basic and len(basic) == frames:
        return [first + o for o in basic]
    if frames == 1:
        return [positions[0]]
    if len(positions) == frames:
        return list(positions)
    starts = []
    for position in positions:
        fp.seek(position + 8)
        if fp.read(2) in _FRAME_STARTS:
            starts.append(position)
    if len(starts) != frames:
        raise FrameError("frame boundaries of the encapsulated pixel data cannot be found")
    return starts


def layout_of_bytes(data: bytes) -> PixelLayout:
    """The layout of an instance held in memory."""
    return parse_layout(io.BytesIO(data), len(data))


class FrameLocator:
    """Frames of indexed instances out of their part zips, with layouts cached in S3 and in memory."""

    def __init__(self, members: Callable[[], MemberReader]) -> None:
        """``members`` gives the member reader (the query function's ``objects.members``)."""
        self._members = members
        self._layouts: OrderedDict[str, PixelLayout] = OrderedDict()

    @property
    def members(self) -> MemberReader:
        """The member reader that reads instances out of part zips."""
        return self._members()

    @staticmethod
    def cache_key(item: dict[str, Any]) -> str:
        """``frame-index/<study>/<series>/<sop>/<part>-<member offset>.json``: UIDs only, no PHI."""
        where = f"{item.get('part_id', 'part')}-{item.get('member_offset', 'x')}"
        return f"{FRAME_INDEX_PREFIX}{item['study_uid']}/{item['series_uid']}/{item['sop_uid']}/{where}.json"

    def frames(
        self, item: dict[str, Any], numbers: list[int], max_bytes: int
    ) -> tuple[PixelLayout, list[bytes]]:
        """The stored bytes of frames ``numbers`` (1-based) and the instance's layout.

        Encapsulated frames are the concatenated fragment values. ``max_bytes`` bounds
        the bytes read. Raises NoSuchFrame, FrameError, and the member reader's errors.
        """
        location = MemberLocation.of_item(item)
        deflated = item.get("transfer_syntax") == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
        if not location.random_access or _number_of_frames(item) <= 1 or deflated:
            data = self.members.read(location, max_bytes)
            if deflated:  # the whole data set is deflated: frames exist only once it is inflated
                from query.transcode import to_explicit_little_endian

                data = to_explicit_little_endian(data)
            layout = layout_of_bytes(data)
            return layout, [_cut(layout, data, n, 0) for n in numbers]
        layout = self.layout(item, location)
        out = []
        total = 0
        for number in numbers:
            start, end = layout.frame_span(number)
            total += end - start
            if total > max_bytes:
                from common.zip_members import MemberTooLarge

                raise MemberTooLarge(f"frames of more than {max_bytes} bytes asked for at once")
            block = self.members.read_range(location, start, end - 1) if end > start else b""
            out.append(_cut(layout, block, number, start))
        return layout, out

    def layout(self, item: dict[str, Any], location: MemberLocation) -> PixelLayout:
        """The cached layout, else the one in S3, else computed (one walk) and stored."""
        key = self.cache_key(item)
        layout = self._layouts.get(key)
        if layout is not None:
            self._layouts.move_to_end(key)
            return layout
        layout = self._stored(key)
        if layout is None:
            layout = self._compute(location)
            self._store(key, layout)
        self._layouts[key] = layout
        if len(self._layouts) > _CACHED_LAYOUTS:
            self._layouts.popitem(last=False)
        return layout

    def _stored(self, key: str) -> PixelLayout | None:
        from botocore.exceptions import ClientError

        try:
            response = self.members.s3.get_object(Bucket=self.members.bucket, Key=key)
        except ClientError:
            return None
        self.members.requests += 1
        try:
            return PixelLayout.from_json(response["Body"].read())
        except (ValueError, TypeError):
            return None

    def _store(self, key: str, layout: PixelLayout) -> None:
        from botocore.exceptions import ClientError

        with contextlib.suppress(ClientError):  # a cache: the next request computes it again
            self.members.s3.put_object(
                Bucket=self.members.bucket,
                Key=key,
                Body=layout.to_json().encode(),
                ContentType="application/json",
            )

    def _compute(self, location: MemberLocation) -> PixelLayout:
        reader = self.members.range_reader(location)
        base = self.members.data_offset(location)
        size = location.size if location.size is not None else reader.size - base
        return parse_layout(cast(IO[bytes], _Window(reader, base, size)), size)


def _number_of_frames(item: dict[str, Any]) -> int:
    try:
        header = json.loads(item.get("json") or "{}")
        value = ((header.get("00280008") or {}).get("Value") or [1])[0]
        return int(value)
    except (ValueError, TypeError):
        return 1


def _cut(layout: PixelLayout, block: bytes, number: int, block_start: int) -> bytes:
    start, end = layout.frame_span(number)
    piece = block[start - block_start : end - block_start]
    if len(piece) < end - start:
        raise FrameError("the instance is shorter than its pixel data says")
    return fragments_payload(piece) if layout.encapsulated else piece
