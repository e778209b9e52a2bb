"""JSON answers to everyday questions: patients, a study and its series, one attribute, download links."""

from __future__ import annotations

import json
from typing import Any

from common import keys
from common.dicom_json import DicomJson, first_text

from query.access import allowed_sites
from query.dependencies import objects, store
from query.errors import BadRequest, NotFound
from query.matching import check_uid
from query.route_table import DocumentedRouter
from query.search import StudyFilter, find_studies
from query.store import Item
from query.tags import keyword_of, tag_of

router = DocumentedRouter()

LINK_SECONDS = 900
MAX_PATIENT_STUDIES = 1000


def _params() -> dict[str, str]:
    return dict(router.current_event.query_string_parameters or {})


def _study_summary(study: Item) -> dict[str, Any]:
    level: DicomJson = json.loads(study["json"])
    return {
        "study_instance_uid": study["study_uid"],
        "study_date": first_text(level, "StudyDate"),
        "study_description": first_text(level, "StudyDescription"),
        "accession_number": first_text(level, "AccessionNumber"),
        "modalities": sorted(study.get("modalities", ())),
        "series_count": int(study.get("series_count", 0)),
        "instance_count": int(study.get("instance_count", 0)),
        "site": study.get("site", ""),
    }


@router.get("/api/patients")
def patients() -> dict[str, Any]:
    """Patients whose name words start with ``name`` (fuzzy) or whose ID is ``id``, with their studies."""
    params = _params()
    unknown = set(params) - {"name", "id"}
    if unknown:
        raise BadRequest("unsupported query parameter(s): " + ", ".join(sorted(unknown)))
    name, patient_id = params.get("name", "").strip(), params.get("id", "").strip()
    if not name and not patient_id:
        raise BadRequest("give name or id")
    query: dict[str, str] = {}
    if name:
        query.update(PatientName=name, fuzzymatching="true")
    if patient_id:
        query["PatientID"] = patient_id
    # A patient is per site: the same PatientID at two sites is two patients (sites are partitions).
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for index, study in enumerate(find_studies(store, allowed_sites(store), StudyFilter.from_params(query))):
        if index >= MAX_PATIENT_STUDIES:
            break
        level: DicomJson = json.loads(study["json"])
        key = (str(study.get("site", "")), first_text(level, "PatientID"), first_text(level, "PatientName"))
        patient = found.setdefault(
            key,
            {
                "site": key[0],
                "patient_id": key[1],
                "patient_name": key[2],
                "birth_date": first_text(level, "PatientBirthDate"),
                "sex": first_text(level, "PatientSex"),
                "studies": [],
            },
        )
        patient["studies"].append(_study_summary(study))
    return {"patients": list(found.values())}


def _visible(study_uid: str) -> Item:
    from query.routes.qido import visible_study

    return visible_study(study_uid)


@router.get("/api/studies/<study_uid>")
def study_with_series(study_uid: str) -> dict[str, Any]:
    """Get a study with its series, as plain JSON for the page."""
    study = _visible(study_uid)
    level: DicomJson = json.loads(study["json"])
    series = []
    for item in store.study_children(study, "SERIES#"):
        series_level: DicomJson = json.loads(item["json"])
        series.append(
            {
                "series_instance_uid": item["series_uid"],
                "modality": first_text(series_level, "Modality"),
                "series_number": first_text(series_level, "SeriesNumber"),
                "series_description": first_text(series_level, "SeriesDescription"),
                "instance_count": int(item.get("instance_count", 0)),
            }
        )
    return {
        **_study_summary(study),
        "patient_id": first_text(level, "PatientID"),
        "patient_name": first_text(level, "PatientName"),
        "series": series,
    }


@router.get("/api/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/attributes/<tag>")
def header_attribute(study_uid: str, series_uid: str, sop_uid: str, tag: str) -> dict[str, Any]:
    """One attribute of an instance's stored header, by tag (``0010,0010``/``00100010``) or keyword."""
    wanted = tag_of(tag)
    from query.routes.qido import visible_instance

    item = visible_instance(study_uid, series_uid, sop_uid)
    metadata_key = keys.metadata_key(study_uid, series_uid, str(item["part_id"]))
    for header in objects.metadata(metadata_key):
        if ((header.get("00080018") or {}).get("Value") or [""])[0] == sop_uid:
            if wanted not in header:
                raise NotFound("attribute not present in this instance")
            element = header[wanted]
            return {
                "tag": f"{wanted[:4]},{wanted[4:]}",
                "keyword": keyword_of(wanted),
                "vr": element.get("vr", ""),
                "value": element.get("Value", []),
                **({"bulk_data_uri": element["BulkDataURI"]} if "BulkDataURI" in element else {}),
            }
    raise NotFound("instance header not found")


@router.get("/api/studies/<study_uid>/series/<series_uid>/download")
def download_links(study_uid: str, series_uid: str) -> dict[str, Any]:
    """Presigned GET links (valid 15 minutes) to the original zip(s) of a series."""
    study = _visible(study_uid)
    check_uid(series_uid, "SeriesInstanceUID")
    parts = list(store.study_children(study, keys.part_prefix(series_uid)))
    if not parts:
        raise NotFound("series not found")
    return {
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "expires_in": LINK_SECONDS,
        "parts": [
            {
                "part_id": p["part_id"],
                "status": p.get("status", ""),
                "url": objects.presigned_get(
                    str(p["object_key"]),
                    LINK_SECONDS,
                    filename=f"{series_uid}-{p['part_id']}.zip",
                    version_id=str(p.get("object_version") or "") or None,  # the bytes indexed
                ),
            }
            for p in parts
        ],
    }
