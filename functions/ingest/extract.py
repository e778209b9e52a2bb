"""From a DICOM header to what the index keeps: patient/study, series and instance attributes.

Values are taken from pydicom's DICOM JSON model, so character sets are decoded
by pydicom and person names keep their alphabetic/ideographic/phonetic groups.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import IO, Any

import pydicom
from common import decode_limits
from common.attributes import (
    INSTANCE_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    Attribute,
)
from common.dicom_dates import normalise_date, normalise_time
from common.dicom_json import DicomJson, first_text
from common.names import name_words
from common.uids import strip_padding, uid_problem
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ingest.fast_json import to_json_dict
from ingest.zip_part import MAX_HEADER_BYTES, HeaderTooLarge, MemberStream, UnreadableMember

# Elements longer than this are not copied into the JSON header; they are bulk data.
BULK_DATA_THRESHOLD = 1024
DEFLATED_UID_BYTES = DeflatedExplicitVRLittleEndian.encode()
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_PATIENT_ID, _ISSUER, _PATIENT_NAME = "00100020", "00100021", "00100010"
# Bytes read from the start of a member to find its file meta group (a few hundred bytes in practice).
FILE_META_PEEK = 16 * 1024
# pydicom's warnings can quote element values (names, dates): they never reach the logs.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)


class RejectedMember(Exception):
    """A member that cannot be indexed; the message is the reason (no PHI)."""


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps of one instance: its UIDs and its study, series and instance DICOM JSON.

    ``header`` is the whole header as DICOM JSON (PS3.18 F.2) without bulk data.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax_uid: str
    study: DicomJson
    series: DicomJson
    instance: DicomJson
    header: DicomJson = field(repr=False)
    # Who the instance is about (see :func:`patient_key`); compared with its study's.
    patient: str = field(default="", repr=False)

    def value(self, level: DicomJson, keyword: str) -> str:
        """First value of an attribute as text ('' when absent)."""
        return first_text(level, keyword)


def _bulk_uri(element: Any) -> str:
    return f"bulkdata/{element.tag:08X}"


class _Watch(io.RawIOBase):
    """Pass-through reader that notices a truncated element (pydicom reads short values silently)."""

    def __init__(self, fp: IO[bytes]) -> None:
        super().__init__()
        self._fp = fp
        self.truncated = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._fp.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fp.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        data = self._fp.read(-1 if size is None else size)
        # A clean end of data set ends on an element boundary: the next tag (8 bytes) or
        # the one-byte peek find nothing. Anything else read short is a cut-off element.
        if size is not None and size > 0 and len(data) < size and (data or size not in (1, 8)):
            self.truncated = True
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def _check_deflated(fp: _Watch | MemberStream) -> None:
    """Refuse a deflated data set whose inflated size exceeds the header budget.

    pydicom inflates the whole data set in one call (``zlib.decompress``), unbounded:
    inflate it once here with a limit first.
    """
    start = fp.tell()
    try:
        read_preamble(fp, False)  # type: ignore[arg-type]
        meta = _read_file_meta_info(fp)  # type: ignore[arg-type]
    except Exception:  # not DICOM Part 10: the real read below says why
        fp.seek(start)
        return
    if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        while not inflater.eof:
            chunk = inflater.unconsumed_tail or fp.read(64 * 1024)
            if not chunk:
                break
            try:
                total += len(inflater.decompress(chunk, 1024 * 1024))
            except zlib.error as exc:
                raise RejectedMember("corrupt deflated data set") from exc
            if total > MAX_HEADER_BYTES:
                raise RejectedMember(f"deflated data set inflates beyond {MAX_HEADER_BYTES // 1024**2} MiB")
    fp.seek(start)
    fp.truncated = False


def _check_counts(fp: _Watch | MemberStream) -> None:
    """Element, item and nesting limits (common.decode_limits) before pydicom builds an object per element.

    The header is read (at most ``MAX_HEADER_BYTES``) and walked without allocating per element:
    a member of a million tiny elements is refused after its first megabytes.
    """
    try:
        decode_limits.check_header_stream(fp, max_bytes=MAX_HEADER_BYTES)
    except decode_limits.LimitExceeded as exc:
        raise RejectedMember(str(exc)) from exc
    except ValueError:
        pass  # a corrupt deflate stream: _check_deflated says so
    finally:
        fp.truncated = False  # the walk's reads may end short of a cut-off file: pydicom's say


def _plausible_start(first: bytes) -> bool:
    """Whether bytes without a preamble start like a data set: group 0002..0010, little or big endian.

    Keeps ``force`` reading for real files without file meta, while noise (or a
    run of zeros, which pydicom would parse as empty elements for seconds per MB)
    is refused at once.
    """
    if len(first) < 4:
        return False
    groups = (int.from_bytes(first[:2], "little"), int.from_bytes(first[:2], "big"))
    return any(0x0002 <= g <= 0x0010 and g % 2 == 0 for g in groups)


# The pixel data tags pydicom stops before (``stop_before_pixels``), as they appear in the file.
_PIXEL_TAGS = frozenset(
    struct.pack(order + "HH", 0x7FE0, element) for order in "<>" for element in (0x0008, 0x0009, 0x0010)
)
# A parse that ends this far inside the buffer cannot have read past its end (pydicom only
# seeks back a few bytes: the tag, VR and length it just read).
_BUFFER_MARGIN = 64


def _read_buffered(head: bytes) -> Dataset | None:
    """The header parsed from the bytes already in memory, when they provably hold all of it.

    The usual case (one ranged GET covers the header): pydicom reads a ``BytesIO``
    several times faster than a Python file object. The result is only kept when
    the parse stopped at the pixel data well inside ``head``, i.e. no read went
    past its end; anything else (no pixel data, a longer header, deflated data
    sets, files pydicom refuses) returns None and takes the full path, which
    checks and reports everything.
    """
    if DEFLATED_UID_BYTES in head:
        return None
    bio = io.BytesIO(head)
    try:
        ds = pydicom.dcmread(bio, stop_before_pixels=True)
    except Exception:
        return None
    pos = bio.tell()
    if pos + _BUFFER_MARGIN > len(head) or head[pos : pos + 4] not in _PIXEL_TAGS:
        return None
    return ds


def file_meta_transfer_syntax(head: bytes) -> str | None:
    """(0002,0010) of the file meta group as its group length (0002,0000) bounds it (PS3.10 7.1).

    pydicom reads every group 0002 element at the start of the data set into the
    file meta, so a data set that carries its own (0002,0010) right after the file
    meta (seen in the wild) would override the real one. None when ``head`` has no
    Part 10 preamble and group length.
    """
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        return None
    if head[136:138] != b"UL" or int.from_bytes(head[138:140], "little") != 4:
        return None
    end = 144 + int.from_bytes(head[140:144], "little")
    pos = 144
    while pos + 8 <= min(end, len(head)):
        group, elem = struct.unpack_from("<HH", head, pos)
        vr = head[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length, value_at = int.from_bytes(head[pos + 8 : pos + 12], "little"), pos + 12
        else:
            length, value_at = int.from_bytes(head[pos + 6 : pos + 8], "little"), pos + 8
        if group != 0x0002:
            return None
        if elem == 0x0010:
            return strip_padding(head[value_at : value_at + length].decode("ascii", "replace"))
        pos = value_at + length
    return None


def _peek(fp: IO[bytes]) -> bytes:
    start = fp.tell()
    try:
        return fp.read(FILE_META_PEEK)
    finally:
        fp.seek(start)


def read_header(fp: IO[bytes]) -> Dataset:
    """Parse a DICOM header, stopping before the pixel data.

    Files without preamble or file meta information are accepted (``force``),
    and then must still carry the UIDs that make them indexable. A header cut
    short, or larger than the budget, is rejected. The file meta's transfer
    syntax is the one bounded by its group length (:func:`file_meta_transfer_syntax`).
    """
    head = fp.buffered_head() if isinstance(fp, MemberStream) else None
    meta_ts = file_meta_transfer_syntax(head if head is not None else _peek(fp))
    ds = _read_header(fp, head)
    file_meta = getattr(ds, "file_meta", None)
    if meta_ts and file_meta is not None and str(getattr(file_meta, "TransferSyntaxUID", "")) != meta_ts:
        file_meta.TransferSyntaxUID = meta_ts
    return ds


def _read_header(fp: IO[bytes], head: bytes | None) -> Dataset:
    if head is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read_buffered(head)
        if ds is not None:
            return ds
    # A member stream notes short reads itself; any other file gets the (slower) watcher.
    watch: _Watch | MemberStream = fp if isinstance(fp, MemberStream) else _Watch(fp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _check_counts(watch)
            _check_deflated(watch)
            try:
                ds = pydicom.dcmread(watch, stop_before_pixels=True)
            except InvalidDicomError:
                watch.seek(0)
                watch.truncated = False
                if not _plausible_start(watch.read(4)):
                    raise RejectedMember("not DICOM (no DICM preamble, no plausible first element)") from None
                watch.seek(0)
                try:
                    ds = pydicom.dcmread(watch, stop_before_pixels=True, force=True)
                except (HeaderTooLarge, UnreadableMember):
                    raise
                except Exception as exc:
                    raise RejectedMember(f"not DICOM: {type(exc).__name__}") from exc
                if not any(k in ds for k in REQUIRED_UIDS):
                    raise RejectedMember("not DICOM (no DICM preamble and no DICOM UIDs)") from None
        except (RejectedMember, HeaderTooLarge, UnreadableMember) as exc:
            raise RejectedMember(str(exc)) from exc
        except Exception as exc:
            raise RejectedMember(f"unreadable DICOM header: {type(exc).__name__}") from exc
    if watch.truncated:
        raise RejectedMember("truncated DICOM header")
    return ds


def extract(ds: Dataset) -> InstanceRecord:
    """Split a header into the index's levels; reject it when a required UID is missing."""
    if getattr(ds, "DirectoryRecordSequence", None) is not None:
        raise RejectedMember("DICOMDIR, not an image instance")
    uids: dict[str, str] = {}
    for keyword in REQUIRED_UIDS:
        value = strip_padding(str(ds.get(keyword, "") or ""))
        if not value:
            raise RejectedMember(f"missing {keyword}")
        # The one UID rule (common.uids): what is indexed is reachable by every route.
        problem = uid_problem(value)
        if problem is not None:
            raise RejectedMember(f"{keyword}: {problem}")
        uids[keyword] = value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Elements that cannot be encoded are left out rather than losing the instance.
            header: DicomJson = to_json_dict(ds, BULK_DATA_THRESHOLD, _bulk_uri)
    except Exception as exc:
        raise RejectedMember(f"header cannot be encoded as DICOM JSON: {type(exc).__name__}") from exc
    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(getattr(file_meta, "TransferSyntaxUID", "") or "")
    return InstanceRecord(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        transfer_syntax_uid=transfer_syntax,
        study=_select(header, STUDY_ATTRIBUTES),
        series=_select(header, SERIES_ATTRIBUTES),
        instance=_select(header, INSTANCE_ATTRIBUTES),
        header=header,
        patient=patient_key(header),
    )


def patient_key(header: DicomJson) -> str:
    """Who an instance is about: ``ID:<issuer>|<PatientID>``, else ``NAME:<folded name words>``, else ''.

    PatientID with IssuerOfPatientID identifies a patient; without a PatientID the
    name (case and accents folded) is all there is. Two instances of one study
    whose keys differ are about two patients (see ingest.process).
    """
    pid = _text(header, _PATIENT_ID)
    if pid:
        return f"ID:{_text(header, _ISSUER)}|{pid}"
    name = _text(header, _PATIENT_NAME)
    return f"NAME:{' '.join(name_words(name))}" if name else ""


def _text(header: DicomJson, tag: str) -> str:
    values = (header.get(tag) or {}).get("Value") or []
    if not values or values[0] is None:
        return ""
    value = values[0]
    if isinstance(value, dict):
        return "=".join(str(value.get(g, "")) for g in ("Alphabetic", "Ideographic", "Phonetic")).strip("=")
    return str(value).strip()


def _select(header: DicomJson, attributes: tuple[Attribute, ...]) -> DicomJson:
    """The index's copy of some attributes, dates and times normalised for matching.

    The stored header (metadata JSON) keeps the values as received.
    """
    selected: DicomJson = {}
    for a in attributes:
        element = header.get(a.tag)
        if element is None:
            continue
        if a.vr in ("DA", "TM") and element.get("Value"):
            normalise = normalise_date if a.vr == "DA" else normalise_time
            element = {**element, "Value": [normalise(str(v)) if v else v for v in element["Value"]]}
        selected[a.tag] = element
    return selected
