"""Read the three routing UIDs from a received dataset without decoding the rest of it.

The C-STORE path must stay minimal: pydicom reads raw elements up to
(0020,000E) SeriesInstanceUID and stops; pixel data is never touched.
"""

from __future__ import annotations

import zlib
from io import BytesIO
from typing import NamedTuple

from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E


class RoutingUids(NamedTuple):
    study_uid: str
    series_uid: str
    sop_uid: str


class Undecodable(ValueError):
    """The dataset cannot be read far enough to route it (answer 0xC210)."""


def _stop_after_series(tag: BaseTag, vr: str | None, length: int) -> bool:
    return bool(tag > SERIES_INSTANCE_UID)


def routing_uids(dataset: bytes, transfer_syntax: str) -> RoutingUids:
    """Study, series and SOP Instance UIDs of an encoded dataset (no file meta)."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        try:
            # Only the start is needed; the routing UIDs sit in the first few KB.
            dataset = zlib.decompressobj(-zlib.MAX_WBITS).decompress(dataset, 1024 * 1024)
        except zlib.error as exc:
            raise Undecodable("deflated dataset cannot be inflated") from exc
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    try:
        ds = read_dataset(BytesIO(dataset), implicit, little, stop_when=_stop_after_series)
        values = [ds.get(tag) for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)]
        uids = [str(v.value).strip("\x00 ") if v is not None and v.value else "" for v in values]
    except Exception as exc:  # pydicom raises many types on garbage
        raise Undecodable(f"dataset cannot be parsed: {type(exc).__name__}") from exc
    if not all(uids):
        raise Undecodable("dataset lacks Study, Series or SOP Instance UID")
    return RoutingUids(*uids)
