"""Plain JSON answers to everyday questions (no DICOM JSON needed to read them)."""

from __future__ import annotations

import json
from typing import Any

from common import keys
from common.dicom_json import first_text

from query.dependencies import settings, store
from query.errors import NotFound
from query.matching import check_uid
from query.route_table import DocumentedRouter
from query.routes.qido import visible_study

router = DocumentedRouter()


@router.get("/api/studies/<study_uid>/series/<series_uid>")
def series_summary(study_uid: str, series_uid: str) -> dict[str, Any]:
    """Instance count, modality, ingest status and the parts (zips) of one series."""
    study = visible_study(study_uid)
    check_uid(series_uid, "SeriesInstanceUID")
    series = store.in_study(study, keys.series_sk(series_uid))
    if series is None:
        raise NotFound("series not found")
    study_level = json.loads(study["json"])
    series_level = json.loads(series["json"])
    parts = [
        {
            "part_id": p["part_id"],
            "status": p.get("status", ""),
            "members": int(p.get("members", 0)),
            "indexed": int(p.get("indexed", 0)),
            "rejected": int(p.get("rejected", 0)),
            "object": f"s3://{settings.bucket_name}/{p['object_key']}",
            "bucket": settings.bucket_name,
            "key": p["object_key"],
            "report": f"s3://{settings.bucket_name}/{p['report_key']}",
            "ingested_at": p.get("ingested_at", ""),
        }
        for p in store.study_children(study, keys.part_prefix(series_uid))
    ]
    statuses = {p["status"] for p in parts}
    return {
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "patient_name": first_text(study_level, "PatientName"),
        "patient_id": first_text(study_level, "PatientID"),
        "study_date": first_text(study_level, "StudyDate"),
        "modality": first_text(series_level, "Modality"),
        "series_number": first_text(series_level, "SeriesNumber"),
        "series_description": first_text(series_level, "SeriesDescription"),
        "instance_count": int(series.get("instance_count", 0)),
        "site": series.get("site", ""),
        "ingest_status": "indexed" if statuses == {"indexed"} else ",".join(sorted(statuses)),
        "parts": parts,
        # Presigned GET links to the zips, valid 15 minutes.
        "download": f"/api/studies/{study_uid}/series/{series_uid}/download",
    }
