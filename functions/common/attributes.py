"""Which DICOM attributes each level of the index keeps (PS3.18 QIDO-RS return keys).

Written out instead of looked up in pydicom's dictionary so that the query
function answers without importing pydicom at cold start.
"""

from __future__ import annotations

from typing import NamedTuple


class Attribute(NamedTuple):
    """A DICOM attribute: keyword, tag (eight hex digits) and VR (PS3.6)."""

    keyword: str
    tag: str  # eight upper-case hex digits, as DICOM JSON spells it
    vr: str


def _attrs(*rows: tuple[str, str, str]) -> tuple[Attribute, ...]:
    return tuple(Attribute(*row) for row in rows)


STUDY_ATTRIBUTES = _attrs(
    ("SpecificCharacterSet", "00080005", "CS"),
    ("StudyDate", "00080020", "DA"),
    ("StudyTime", "00080030", "TM"),
    ("AccessionNumber", "00080050", "SH"),
    ("ReferringPhysicianName", "00080090", "PN"),
    ("TimezoneOffsetFromUTC", "00080201", "SH"),
    ("StudyDescription", "00081030", "LO"),
    ("PatientName", "00100010", "PN"),
    ("PatientID", "00100020", "LO"),
    ("PatientBirthDate", "00100030", "DA"),
    ("PatientSex", "00100040", "CS"),
    ("StudyInstanceUID", "0020000D", "UI"),
    ("StudyID", "00200010", "SH"),
)

SERIES_ATTRIBUTES = _attrs(
    ("SeriesDate", "00080021", "DA"),
    ("SeriesTime", "00080031", "TM"),
    ("Modality", "00080060", "CS"),
    ("SeriesDescription", "0008103E", "LO"),
    ("BodyPartExamined", "00180015", "CS"),
    ("SeriesInstanceUID", "0020000E", "UI"),
    ("SeriesNumber", "00200011", "IS"),
    ("PerformedProcedureStepStartDate", "00400244", "DA"),
    ("PerformedProcedureStepStartTime", "00400245", "TM"),
)

INSTANCE_ATTRIBUTES = _attrs(
    ("SOPClassUID", "00080016", "UI"),
    ("SOPInstanceUID", "00080018", "UI"),
    ("InstanceNumber", "00200013", "IS"),
    ("NumberOfFrames", "00280008", "IS"),
    ("Rows", "00280010", "US"),
    ("Columns", "00280011", "US"),
    ("BitsAllocated", "00280100", "US"),
)

# Computed at query time from the index's counters.
MODALITIES_IN_STUDY = Attribute("ModalitiesInStudy", "00080061", "CS")
STUDY_RELATED_SERIES = Attribute("NumberOfStudyRelatedSeries", "00201206", "IS")
STUDY_RELATED_INSTANCES = Attribute("NumberOfStudyRelatedInstances", "00201208", "IS")
SERIES_RELATED_INSTANCES = Attribute("NumberOfSeriesRelatedInstances", "00201209", "IS")
RETRIEVE_URL = Attribute("RetrieveURL", "00081190", "UR")

BY_KEYWORD: dict[str, Attribute] = {
    a.keyword: a
    for a in (
        *STUDY_ATTRIBUTES,
        *SERIES_ATTRIBUTES,
        *INSTANCE_ATTRIBUTES,
        MODALITIES_IN_STUDY,
        STUDY_RELATED_SERIES,
        STUDY_RELATED_INSTANCES,
        SERIES_RELATED_INSTANCES,
        RETRIEVE_URL,
    )
}
BY_TAG: dict[str, Attribute] = {a.tag: a for a in BY_KEYWORD.values()}
