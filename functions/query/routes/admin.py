"""Administrator routes: patient conflicts that ingest kept out of a study, listed and resolved.

An instance whose patient (PatientID + IssuerOfPatientID, else PatientName)
differs from its study's is never indexed into it (see ingest.process); ingest
writes a conflict item per part instead. An administrator (scope ``dicom/admin``,
``ADMIN_SCOPE``) lists them and resolves each one:

- ``accept``: the instances belong to the study after all (a typo in the
  patient data): the part is rewritten in place, which makes ingest run again
  and index them into the study;
- ``dismiss``: they stay out (the part remains in the bucket, listed here).
"""

from __future__ import annotations

import json
from typing import Any

from common import keys

from query.access import admin_sites, current_caller
from query.dependencies import objects, store
from query.errors import BadRequest, NotFound
from query.matching import check_uid
from query.route_table import DocumentedRouter
from query.store import Item

router = DocumentedRouter()

STATUSES = ("open", "accepted", "dismissed")
ACTIONS = {"accept": "accepted", "dismiss": "dismissed"}


def _conflict_json(item: Item) -> dict[str, Any]:
    study, series, part = str(item["study_uid"]), str(item["series_uid"]), str(item["part_id"])
    return {
        "site": item["site"],
        "study_instance_uid": study,
        "series_instance_uid": series,
        "part_id": part,
        "status": item.get("status", "open"),
        "sop_instance_uids": sorted(item.get("sop_uids", ())),
        "study_patient": item.get("study_patient", {}),
        "instance_patient": item.get("instance_patient", {}),
        "object_key": item.get("object_key", ""),
        "created_at": item.get("created_at", ""),
        "resolved_at": item.get("resolved_at", ""),
        "resolve": f"/api/partitions/{item['site']}/admin/conflicts/{study}/{series}/{part}",
    }


@router.get("/api/admin/conflicts")
def list_conflicts() -> dict[str, Any]:
    """Patient conflicts of the caller's sites; ``?status=`` open (default), accepted, dismissed or all."""
    wanted = (router.current_event.query_string_parameters or {}).get("status", "open")
    if wanted not in (*STATUSES, "all"):
        raise BadRequest(f"status must be one of {', '.join((*STATUSES, 'all'))}")
    found = [
        _conflict_json(item)
        for site in admin_sites(store)
        for item in store.query("pk", keys.conflicts_pk(site))
        if wanted == "all" or item.get("status", "open") == wanted
    ]
    return {"conflicts": found}


@router.post("/api/admin/conflicts/<study_uid>/<series_uid>/<part_id>")
def resolve_conflict(study_uid: str, series_uid: str, part_id: str) -> dict[str, Any]:
    """Resolve one conflict: body ``{"action": "accept"}`` or ``{"action": "dismiss"}``."""
    check_uid(study_uid, "StudyInstanceUID")
    check_uid(series_uid, "SeriesInstanceUID")
    if not keys.is_site(part_id):  # part ids share the site alphabet: safe in a key
        raise BadRequest("malformed part id")
    try:
        action = str(json.loads(router.current_event.decoded_body or "{}").get("action", ""))
    except (ValueError, AttributeError) as exc:
        raise BadRequest('the body must be JSON: {"action": "accept" | "dismiss"}') from exc
    if action not in ACTIONS:
        raise BadRequest('action must be "accept" or "dismiss"')
    sites = admin_sites(store)
    sk = keys.conflict_sk(study_uid, series_uid, part_id)
    held = [s for s in sites if store.get(keys.conflicts_pk(s), sk) is not None]
    if not held:
        raise NotFound("conflict not found")
    if len(held) > 1:
        raise BadRequest(
            "this conflict exists in several of your sites: name one with /api/partitions/<site>/"
        )
    caller = current_caller()
    by = "token" if caller.authenticated else "open"
    item = store.set_conflict_status(held[0], sk, ACTIONS[action], by)
    if item is None:
        raise NotFound("conflict not found")
    if action == "accept":
        objects.rewrite(str(item["object_key"]), {"conflict-accepted": "true"})
    return _conflict_json(item)
