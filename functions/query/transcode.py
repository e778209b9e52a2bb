"""Decoding stored frames to native pixels with pydicom's decoders (pylibjpeg family), within limits.

Imported only when a client asks for a representation other than the stored one.
Every decode first calls :func:`common.decode_limits.check_pixel_budget` with the
header's numbers, so a hostile header cannot make us allocate gigabytes.
"""

from __future__ import annotations

from typing import Any

from common.decode_limits import check_pixel_budget

from query.accept import EXPLICIT_VR_BIG_ENDIAN
from query.pixel_layout import FrameError, PixelLayout


def can_decode(transfer_syntax: str) -> bool:
    """Whether a decoder for ``transfer_syntax`` is installed (native ones always are)."""
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    if not uid.is_compressed:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


def decode_frame(layout: PixelLayout, frame: bytes) -> bytes:
    """One frame as native little-endian pixels (interleaved samples), PS3.5 8.2.

    Raises common.decode_limits.LimitExceeded before decoding a frame above the budget,
    FrameError when no decoder can read it.
    """
    header = layout.header
    check_pixel_budget(header)
    if not layout.encapsulated:
        bits = int(header.get("BitsAllocated", 8))
        if layout.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN and bits in (16, 32, 64):
            import numpy as np

            return np.frombuffer(frame, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
        return frame
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    try:
        decoder = get_decoder(UID(layout.transfer_syntax))
        options: dict[str, Any] = dict(
            rows=int(header["Rows"]),
            columns=int(header["Columns"]),
            samples_per_pixel=int(header.get("SamplesPerPixel", 1)),
            bits_allocated=int(header.get("BitsAllocated", 8)),
            bits_stored=int(header.get("BitsStored", header.get("BitsAllocated", 8))),
            pixel_representation=int(header.get("PixelRepresentation", 0)),
            photometric_interpretation=str(header.get("PhotometricInterpretation", "MONOCHROME2")),
            planar_configuration=int(header.get("PlanarConfiguration", 0)),
            number_of_frames=1,
        )
        options["as_rgb"] = False
        array, _meta = decoder.as_array(encapsulate([frame]), index=0, **options)
    except (NotImplementedError, RuntimeError, ValueError, KeyError) as exc:
        raise FrameError(f"the frame cannot be decoded: {type(exc).__name__}") from exc
    return bytes(array.astype(array.dtype.newbyteorder("<")).tobytes())


def to_explicit_little_endian(data: bytes) -> bytes:
    """A Part 10 instance re-encoded in Explicit VR Little Endian, pixels decoded (PS3.5 A.2).

    The SOP Instance UID is kept (a retrieval, not a new instance). Raises LimitExceeded
    before decoding above the pixel budget, FrameError when the pixels cannot be decoded.
    """
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    try:
        ds = dcmread(BytesIO(data), force=True)
    except Exception as exc:
        raise FrameError(f"the instance cannot be parsed: {type(exc).__name__}") from exc
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts == ExplicitVRLittleEndian:
        return data
    if "PixelData" in ds:
        check_pixel_budget(ds, frames=int(ds.get("NumberOfFrames") or 1))
    try:
        if ts is not None and ts.is_compressed:
            ds.decompress(generate_instance_uid=False)
        elif ts == ExplicitVRBigEndian and "PixelData" in ds and int(ds.get("BitsAllocated", 8)) > 8:
            pixels = ds.pixel_array
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as exc:
        raise FrameError(f"the pixel data cannot be decoded: {type(exc).__name__}") from exc
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()
