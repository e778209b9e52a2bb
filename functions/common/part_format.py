"""The part format: the one contract between whoever writes a series part (edge gateway, STOW-RS) and ingest.

A part is a zip at :func:`common.keys.incoming_key` (``incoming/<study>/<series>/<part id>.zip``)
holding one member per instance (``<SOPInstanceUID>.dcm``) and :data:`MANIFEST_NAME`,
a JSON object (schema :data:`MANIFEST_FORMAT`)::

    {"format": "dicom-series-part/1", "gateway_id": "<site>", "part_id": "...",
     "study_instance_uid": "...", "series_instance_uid": "...", "instance_count": 2,
     "instances": [{"member": "<sop>.dcm", "sop_instance_uid": "<sop>", "size": 123,
                    "sha256": "<hex>", "dataset_sha256": "<hex, optional>",
                    "received_at": 1700000000.0,
                    "transfer_syntax_uid": "<negotiated, optional>"}]}

``sha256`` is the digest of the member's bytes (file meta included); ``dataset_sha256``,
when present, of its data set only (``common.dataset_digest``): the identity of the
content that versions are compared by, the same through every door (C-STORE, import,
STOW-RS). Parts written before it existed carry ``sha256`` alone.

``received_at`` (seconds since the epoch) orders versions of one instance
(latest received wins); ``transfer_syntax_uid``, when present, is the one the
association negotiated. The object carries user metadata (:func:`object_metadata`)
with the same site, ids, count and the manifest's SHA-256, so that S3 alone
shows what a part is. The site (``gateway_id``) is the data partition of
everything indexed from the part (``common.keys``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from common import keys

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dicom-series-part/1"
# The site of parts that name none (STOW without a site, gateways before sites existed).
DEFAULT_SITE = "default"


def instance_entry(
    sop_uid: str,
    size: int,
    sha256: str,
    received_at: float,
    member: str | None = None,
    transfer_syntax_uid: str = "",
    dataset_sha256: str = "",
) -> dict[str, Any]:
    """One ``instances`` entry of the manifest (member name defaults to ``<sop>.dcm``)."""
    entry: dict[str, Any] = {
        "member": member or f"{sop_uid}.dcm",
        "sop_instance_uid": sop_uid,
        "size": size,
        "sha256": sha256,
        "received_at": received_at,
    }
    if dataset_sha256:
        entry["dataset_sha256"] = dataset_sha256
    if transfer_syntax_uid:
        entry["transfer_syntax_uid"] = transfer_syntax_uid
    return entry


def manifest_bytes(
    site: str, part_id: str, study_uid: str, series_uid: str, instances: Iterable[Mapping[str, Any]]
) -> bytes:
    """The manifest JSON of a part (UTF-8)."""
    records = list(instances)
    return json.dumps(
        {
            "format": MANIFEST_FORMAT,
            "gateway_id": site,
            "part_id": part_id,
            "study_instance_uid": study_uid,
            "series_instance_uid": series_uid,
            "instance_count": len(records),
            "instances": records,
        },
        indent=1,
    ).encode()


def manifest_sha256(manifest: bytes) -> str:
    """SHA-256 of the manifest's bytes, hex: what the object metadata carries."""
    return hashlib.sha256(manifest).hexdigest()


def object_key(study_uid: str, series_uid: str, part_id: str) -> str:
    """Where a part is uploaded (``common.keys.incoming_key``)."""
    return keys.incoming_key(study_uid, series_uid, part_id)


def object_metadata(
    site: str, part_id: str, study_uid: str, series_uid: str, instance_count: int, manifest_sha: str
) -> dict[str, str]:
    """The S3 user metadata (``x-amz-meta-*``) of a part object."""
    return {
        "study-uid": study_uid,
        "series-uid": series_uid,
        "part-id": part_id,
        "instance-count": str(instance_count),
        "gateway-id": site,
        "manifest-sha256": manifest_sha,
    }


class NotASite(ValueError):
    """A part names a site outside ``common.keys.SITE_PATTERN`` (it would end up in keys)."""


def site_of(manifest: Mapping[str, Any], metadata: Mapping[str, str]) -> str:
    """The part's site: the manifest's ``gateway_id``, else the object's ``gateway-id``, else the default.

    Raises NotASite for a malformed name: such a part is refused, never filed under another site.
    """
    site = str(manifest.get("gateway_id") or metadata.get("gateway-id") or DEFAULT_SITE)
    if not keys.is_site(site):
        raise NotASite("the part's site (gateway id) is not a valid site name")
    return site


def received_at(manifest: Mapping[str, Any]) -> dict[str, float]:
    """``received_at`` of each member the manifest lists (members without one are left out)."""
    found: dict[str, float] = {}
    for entry in manifest.get("instances") or []:
        if isinstance(entry, dict) and isinstance(entry.get("received_at"), int | float):
            found[str(entry.get("member"))] = float(entry["received_at"])
    return found


def transfer_syntaxes(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The negotiated transfer syntax of each member the manifest names one for."""
    found: dict[str, str] = {}
    for entry in manifest.get("instances") or []:
        if isinstance(entry, dict) and isinstance(entry.get("transfer_syntax_uid"), str):
            found[str(entry.get("member"))] = entry["transfer_syntax_uid"]
    return found
