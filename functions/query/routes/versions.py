"""The history of one instance: the version in the index and the earlier ones it replaced."""

from __future__ import annotations

from typing import Any

from common import keys

from query.access import visible_instance
from query.dependencies import store
from query.route_table import DocumentedRouter
from query.store import Item

router = DocumentedRouter()


def _version(item: Item) -> dict[str, Any]:
    return {
        "part_id": item.get("part_id", ""),
        "fingerprint": item.get("fingerprint", ""),
        "received_at": float(item.get("received_at", 0) or 0),
        "object_key": item.get("object_key", ""),
        "replaced_by": item.get("replaced_by", item.get("superseded_by", "")),
        "replaced_at": item.get("replaced_at", ""),
    }


@router.get("/api/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/versions")
def instance_versions(study_uid: str, series_uid: str, sop_uid: str) -> dict[str, Any]:
    """The indexed version of an instance (latest received) and its earlier versions, newest first."""
    current = visible_instance(store, study_uid, series_uid, sop_uid)
    earlier = list(store.study_children(current, keys.version_prefix(series_uid, sop_uid)))
    earlier.sort(key=lambda i: (float(i.get("received_at", 0) or 0), str(i.get("part_id", ""))), reverse=True)
    return {
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "sop_instance_uid": sop_uid,
        "site": current.get("site", ""),
        "current": _version(current),
        "history": [_version(i) for i in earlier],
    }
