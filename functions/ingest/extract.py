"""From a DICOM header to what the index keeps: patient/study, series and instance attributes.

Values are taken from pydicom's DICOM JSON model, so character sets are decoded
by pydicom and person names keep their alphabetic/ideographic/phonetic groups.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

import pydicom
from common.attributes import (
    INSTANCE_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    Attribute,
)
from common.dicom_json import DicomJson, first_text
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

# Elements longer than this are not copied into the JSON header; they are bulk data.
BULK_DATA_THRESHOLD = 1024
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class RejectedMember(Exception):
    """A member that cannot be indexed; the message is the reason (no PHI)."""


@dataclass(frozen=True)
class InstanceRecord:
    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax_uid: str
    study: DicomJson
    series: DicomJson
    instance: DicomJson
    header: DicomJson = field(repr=False)

    def value(self, level: DicomJson, keyword: str) -> str:
        """First value of an attribute as text ('' when absent)."""
        return first_text(level, keyword)


def _bulk_uri(element: Any) -> str:
    return f"bulkdata/{element.tag:08X}"


def read_header(fp: IO[bytes]) -> Dataset:
    """Parse a DICOM header, stopping before the pixel data.

    Files without preamble or file meta information are accepted (``force``),
    and then must still carry the UIDs that make them indexable.
    """
    try:
        return pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        fp.seek(0)
        try:
            return pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        except Exception as exc:
            raise RejectedMember(f"not DICOM: {type(exc).__name__}") from exc
    except Exception as exc:
        raise RejectedMember(f"unreadable DICOM header: {type(exc).__name__}") from exc


def extract(ds: Dataset) -> InstanceRecord:
    """Split a header into the index's levels; reject it when a required UID is missing."""
    if getattr(ds, "DirectoryRecordSequence", None) is not None:
        raise RejectedMember("DICOMDIR, not an image instance")
    uids: dict[str, str] = {}
    for keyword in REQUIRED_UIDS:
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            raise RejectedMember(f"missing {keyword}")
        uids[keyword] = value
    try:
        header: DicomJson = ds.to_json_dict(
            bulk_data_threshold=BULK_DATA_THRESHOLD, bulk_data_element_handler=_bulk_uri
        )
    except Exception as exc:
        raise RejectedMember(f"header cannot be encoded as DICOM JSON: {exc}") from exc
    # Round-trip once so that the stored copy is plain JSON (no pydicom types).
    header = json.loads(json.dumps(header))
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
    )


def _select(header: DicomJson, attributes: tuple[Attribute, ...]) -> DicomJson:
    return {a.tag: header[a.tag] for a in attributes if a.tag in header}
