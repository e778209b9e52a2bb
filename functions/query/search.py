"""QIDO-RS searches: pick the narrowest key or index for the request, then match every filter.

Index choice for studies, most selective first: StudyInstanceUID (GetItem),
PatientID / AccessionNumber / PatientName word prefix / Modality (``ByLookup``),
otherwise the site's studies by date (``BySiteDate``, with the StudyDate range
as the key condition). The remaining filters are applied to the candidates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from common import keys
from common.dicom_json import DicomJson, first_text

from query.matching import (
    Range,
    date_range,
    flag,
    full_time,
    has_wildcard,
    match_folded,
    match_name,
    match_text,
    name_index_prefix,
    time_range,
    uid_list,
)
from query.store import IndexStore, Item

# Query parameters that are not matching attributes.
CONTROL_PARAMETERS = {"limit", "offset", "fuzzymatching", "includefield"}
STUDY_MATCHING = {
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
}
SERIES_MATCHING = {"Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate"}
INSTANCE_MATCHING = {"SOPClassUID", "SOPInstanceUID", "InstanceNumber"}


@dataclass(frozen=True)
class StudyFilter:
    """Study-level matching keys of a QIDO-RS or C-FIND query (PS3.4 C.2.2.2, PS3.18 10.6.1).

    None means the key is absent (universal matching); UIDs are a list (list of UID matching).
    """

    study_uids: list[str] | None = None
    patient_id: str | None = None
    accession: str | None = None
    study_id: str | None = None
    patient_name: str | None = None
    referring: str | None = None
    description: str | None = None
    modality: str | None = None
    study_date: Range | None = None
    study_time: Range | None = None
    fuzzy: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> StudyFilter:
        """The filter of QIDO-RS query parameters (keyword -> value); raises BadRequest for a bad value."""

        def text(name: str) -> str | None:
            value = params.get(name)
            return value if value not in (None, "", "*") else None

        uids = params.get("StudyInstanceUID")
        date = text("StudyDate")
        time = text("StudyTime")
        return cls(
            study_uids=uid_list(uids, "StudyInstanceUID") if uids else None,
            patient_id=text("PatientID"),
            accession=text("AccessionNumber"),
            study_id=text("StudyID"),
            patient_name=text("PatientName"),
            referring=text("ReferringPhysicianName"),
            description=text("StudyDescription"),
            modality=text("ModalitiesInStudy"),
            study_date=date_range(date, "StudyDate") if date else None,
            study_time=time_range(time, "StudyTime") if time else None,
            fuzzy=flag(params, "fuzzymatching"),
        )

    def matches(self, study: Item) -> bool:
        """Whether a study item matches every key of the filter."""
        level: DicomJson = json.loads(study["json"])
        checks = [
            self.study_uids is None or study["study_uid"] in self.study_uids,
            self.patient_id is None or match_text(study.get("PatientID", ""), self.patient_id),
            self.accession is None or match_text(study.get("AccessionNumber", ""), self.accession),
            self.study_id is None or match_text(study.get("StudyID", ""), self.study_id),
            self.study_date is None or self.study_date.contains(study.get("StudyDate", "")),
            self.study_time is None
            or (bool(study.get("StudyTime")) and self.study_time.contains(full_time(study["StudyTime"]))),
            self.modality is None or any(match_text(m, self.modality) for m in study.get("modalities", ())),
            self.patient_name is None
            or match_name(first_text(level, "PatientName"), self.patient_name, self.fuzzy),
            self.referring is None
            or match_name(first_text(level, "ReferringPhysicianName"), self.referring, self.fuzzy),
            self.description is None or match_folded(first_text(level, "StudyDescription"), self.description),
        ]
        return all(checks)


def find_studies(store: IndexStore, sites: Iterable[str], flt: StudyFilter) -> Iterator[Item]:
    """Study items matching the filter, newest first within each site.

    Each site is searched in its own keys (lookups ``<site>#...``, ``SITE#<site>``
    by date, study items ``SITE#<site>#STUDY#<uid>``), so one site's values never
    answer for another's: the same UID in two sites is two results.
    """
    allowed = sorted(set(sites))
    if flt.study_uids is not None:
        for site in allowed:
            yield from (s for s in store.get_studies(site, flt.study_uids) if flt.matches(s))
        return
    for site in allowed:
        seen: set[str] = set()
        for study in _candidates(store, site, flt):
            uid = str(study["study_uid"])
            # Every key read here is the site's own (see common.keys); the check keeps it so.
            if study.get("site") == site and uid not in seen and flt.matches(study):
                seen.add(uid)
                yield study


def _candidates(store: IndexStore, site: str, flt: StudyFilter) -> Iterator[Item]:
    lookup = _lookup_key(flt)
    if lookup is None:
        between = None
        if flt.study_date is not None:
            between = (flt.study_date.low, flt.study_date.high + "~")
        yield from store.query(
            "gsi2pk",
            keys.site_pk(site),
            sk_name="gsi2sk",
            sk_between=between,
            index=keys.SITE_DATE_INDEX,
            forward=False,
        )
        return
    attr, key, prefix = lookup
    hits = store.query(
        "gsi1pk",
        keys.lookup_pk(site, attr, key),
        sk_name="gsi1sk",
        sk_prefix=prefix,
        index=keys.LOOKUP_INDEX,
        forward=False,
    )
    # The index projects keys only: site and study UID are in the table key.
    uids = list(dict.fromkeys(uid for owner, uid in _studies_of(hits) if owner == site))
    yield from store.get_studies(site, uids)


def _studies_of(hits: Iterable[Item]) -> Iterator[tuple[str, str]]:
    """(site, study UID) of each lookup hit; lookups left by the pre-partition layout are skipped."""
    for hit in hits:
        try:
            yield keys.study_of(str(hit["pk"]))
        except ValueError:
            continue


def _lookup_key(flt: StudyFilter) -> tuple[str, str, str | None] | None:
    """(lookup attribute, partition value, sort-key prefix) of the most selective lookup."""
    if flt.patient_id and not has_wildcard(flt.patient_id):
        return "PID", flt.patient_id, None
    if flt.accession and not has_wildcard(flt.accession):
        return "ACC", flt.accession, None
    if flt.patient_name:
        prefix = name_index_prefix(flt.patient_name, flt.fuzzy)
        if prefix:
            return "NAME", prefix[0], prefix
    if flt.modality and not has_wildcard(flt.modality) and flt.study_date is None:
        return "MOD", flt.modality, None
    return None
