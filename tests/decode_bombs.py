"""Hostile DICOM files, small on the wire and huge once parsed or decoded (tests and bench/decode_bombs.py).

Each builder writes the bytes by hand (explicit VR little endian elements, PS3.5 7.1.2),
streaming where the inflated size is large, so building a 512 MB bomb costs no memory.
"""

from __future__ import annotations

import io
import struct
import zlib

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
_LONG = {b"OB", b"OW", b"SQ", b"UN", b"UT"}


def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in _LONG:
        return struct.pack("<HH2sHI", group, number, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr, len(value)) + value


def part10(dataset: bytes, transfer_syntax: str, sop_uid: str) -> bytes:
    """Preamble, DICM and file meta (PS3.10 7.1) in front of an encoded data set."""
    meta = (
        element(0x0002, 0x0001, b"OB", b"\0\1")
        + element(0x0002, 0x0002, b"UI", CT_IMAGE_STORAGE.encode())
        + element(0x0002, 0x0003, b"UI", sop_uid.encode())
        + element(0x0002, 0x0010, b"UI", transfer_syntax.encode())
    )
    group_length = element(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta)))
    return b"\0" * 128 + b"DICM" + group_length + meta + dataset


def identity(sop_uid: str, study_uid: str | None = None, series_uid: str | None = None) -> bytes:
    """SOP class, SOP instance, study and series UIDs (groups 0008 and 0020, in tag order)."""
    return (
        element(0x0008, 0x0016, b"UI", CT_IMAGE_STORAGE.encode())
        + element(0x0008, 0x0018, b"UI", sop_uid.encode())
        + element(0x0020, 0x000D, b"UI", (study_uid or generate_uid()).encode())
        + element(0x0020, 0x000E, b"UI", (series_uid or generate_uid()).encode())
    )


def image_pixel(rows: int, columns: int) -> bytes:
    return (
        element(0x0028, 0x0002, b"US", struct.pack("<H", 1))
        + element(0x0028, 0x0004, b"CS", b"MONOCHROME2")
        + element(0x0028, 0x0010, b"US", struct.pack("<H", rows))
        + element(0x0028, 0x0011, b"US", struct.pack("<H", columns))
        + element(0x0028, 0x0100, b"US", struct.pack("<H", 16))
        + element(0x0028, 0x0101, b"US", struct.pack("<H", 16))
        + element(0x0028, 0x0102, b"US", struct.pack("<H", 15))
        + element(0x0028, 0x0103, b"US", struct.pack("<H", 0))
    )


def deflate_bomb(inflated_bytes: int) -> bytes:
    """A Deflated Explicit VR Little Endian file whose data set inflates to ``inflated_bytes``.

    The pixel data is zeros: 512 MB deflate to about 510 KB.
    """
    sop_uid = generate_uid()
    pixels = inflated_bytes - 512
    head = identity(sop_uid) + image_pixel(1, 1) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [packer.compress(head)]
    chunk = bytes(1024 * 1024)
    left = pixels
    while left > 0:
        out.append(packer.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    out.append(packer.flush())
    return part10(b"".join(out), DEFLATED, sop_uid)


def element_bomb(count: int) -> bytes:
    """``count`` empty private LO elements after the identity: 8 bytes each on the wire."""
    sop_uid = generate_uid()
    tiny = b"".join(
        struct.pack("<HH2sH", 0x0009 + 2 * (i // 0xFE00), 0x0100 + i % 0xFE00, b"LO", 0) for i in range(count)
    )
    return part10(identity(sop_uid) + tiny, EXPLICIT_LITTLE, sop_uid)


def item_bomb(count: int) -> bytes:
    """One undefined-length sequence of ``count`` empty items (8 bytes each)."""
    sop_uid = generate_uid()
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0) * count
    sequence = (
        struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
        + items
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    return part10(identity(sop_uid) + sequence, EXPLICIT_LITTLE, sop_uid)


def depth_bomb(depth: int) -> bytes:
    """Sequences nested ``depth`` deep, each of one undefined-length item."""
    sop_uid = generate_uid()
    opening = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return part10(identity(sop_uid) + opening * depth + closing * depth, EXPLICIT_LITTLE, sop_uid)


def rle_bomb(
    rows: int, columns: int, *, study_uid: str | None = None, series_uid: str | None = None
) -> bytes:
    """pydicom's MR_small_RLE.dcm (about 6 KB of RLE data) declaring ``rows`` x ``columns``."""
    path = get_testdata_file("MR_small_RLE.dcm")
    assert path is not None
    ds = dcmread(str(path))
    ds.Rows, ds.Columns = rows, columns
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def large_native(rows: int, columns: int) -> bytes:
    """Not a bomb: a real 16-bit native image of ``rows`` x ``columns`` (a ramp), within the limits."""
    sop_uid = generate_uid()
    pixels = (bytes(range(256)) * (rows * columns * 2 // 256 + 1))[: rows * columns * 2]
    return part10(
        identity(sop_uid) + image_pixel(rows, columns) + element(0x7FE0, 0x0010, b"OW", pixels),
        EXPLICIT_LITTLE,
        sop_uid,
    )
