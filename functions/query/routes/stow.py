"""STOW-RS (PS3.18 10.5) for small uploads: each series becomes one part zip in ``incoming/``.

Ingest stays the single write path: the zip (members ``<SOPInstanceUID>.dcm``
plus ``manifest.json``, as the edge gateway writes them) triggers the same
ingest as a gateway upload. The answer lists the accepted instances
(ReferencedSOPSequence) and the refused ones with a reason (FailedSOPSequence):
200 when all were accepted, 202 when some were, 409 when none was.

Versions (the policy of ``ingest.process``): an instance whose SOP Instance UID is
already indexed in the uploader's site is compared with the indexed copy by its
bytes. The same bytes are a no-op (``0x0111``, duplicate); other bytes are a new
version, accepted and stored in a new part: ingest reports it ``updated`` (latest
received wins) and keeps the earlier version in the instance's history.
The part object is created with ``If-None-Match: *``: a part is never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response
from common import decode_limits, keys, part_format
from common.dataset_digest import dataset_sha256
from common.uids import strip_padding, uid_problem

from query import links
from query.access import current_caller, partition, partition_base, require, write_scope
from query.dependencies import objects, store
from query.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    StoreError,
    Unauthorized,
    UnsupportedMediaType,
)
from query.matching import check_uid
from query.route_table import DocumentedRouter

router = DocumentedRouter()

DICOM_JSON = "application/dicom+json"
# PS3.4 / PS3.7 failure reasons used in FailedSOPSequence.
CANNOT_UNDERSTAND = 0xC000
DUPLICATE = 0x0111
WRONG_STUDY = 0xA900
# PS3.4 C.4.2.1.3 / PS3.18 Table 10.5.3-1: refused, out of resources (over a decode limit).
OUT_OF_RESOURCES = 0xA700
# PS3.4 C.4.2.1.3: refused because a UID breaks the UID rule (common.uids).
INVALID_UID = 0xA901
# Parts one request may carry (API Gateway also caps the body at 10 MB).
MAX_PARTS = 1000
# Fresh part ids to try when a key is taken (random ids: a second try is already unheard of).
PART_ID_ATTEMPTS = 3
DEFAULT_SITE = part_format.DEFAULT_SITE


class UidRefused(ValueError):
    """A UID of the instance breaks the one UID rule; the message says which and why (no value)."""


@dataclass
class Accepted:
    """An instance that passed the checks of a STOW-RS request, with its Part 10 bytes."""

    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str
    data: bytes


def _boundary(content_type: str) -> str:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media != "multipart/related":
        raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom"')
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "type" and value.strip('"').lower() != "application/dicom":
            raise UnsupportedMediaType('only type="application/dicom" parts are accepted')
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"')
    raise BadRequest("multipart/related without a boundary")


def split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, content) of each part of a multipart body."""
    delimiter = b"--" + boundary.encode()
    if body.count(delimiter) > MAX_PARTS + 1:
        raise PayloadTooLarge(f"more than {MAX_PARTS} parts in one request")
    pieces = body.split(delimiter)
    if len(pieces) < 3:
        raise BadRequest("the multipart body has no part")
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        head, sep, content = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest("a multipart part has no header end")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content.removesuffix(b"\r\n")))
    return parts


def over_limits(data: bytes) -> str | None:
    """Why a part is refused before pydicom parses it (common.decode_limits), or None.

    Bounded inflation of a deflated data set, element/item counts, and the decoded size
    of one frame: an instance that could never be decoded here is refused at the door.
    """
    try:
        numbers = decode_limits.check_part10(data, stop_before_pixels=True)
        decode_limits.check_pixel_budget(numbers)
    except decode_limits.LimitExceeded as exc:
        return str(exc)
    except ValueError:
        return None  # corrupt: _read says it cannot be understood
    return None


def _read(data: bytes) -> tuple[str, str, str, str]:
    """(SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID) of a Part 10 file."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    names = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    values = tuple(strip_padding(str(ds.get(k, "") or "")) for k in names)
    if not all(values):
        raise ValueError("not a DICOM instance with its UIDs")
    for name, value in zip(names, values, strict=True):
        problem = uid_problem(value)
        if problem is not None:
            raise UidRefused(f"{name}: {problem}")
    return values  # type: ignore[return-value]


def _site() -> str:
    """The site (partition) the upload is stored in: named by the request, or the token's only site."""
    caller = current_caller()
    asked = partition()
    if asked is not None and not keys.is_site(asked):
        raise BadRequest("malformed site name")
    if caller.sites is None:
        return asked or DEFAULT_SITE
    if asked:
        if asked not in caller.sites:
            raise BadRequest("the token does not name this site")
        return asked
    if len(caller.sites) != 1:
        raise BadRequest("the token names several sites: choose one with ?site=")
    return next(iter(caller.sites))


def _zip(
    study_uid: str, series_uid: str, part_id: str, site: str, members: list[Accepted]
) -> tuple[bytes, str]:
    """The part zip (common.part_format) and the SHA-256 of its manifest."""
    records = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for m in members:
            entry = part_format.instance_entry(
                m.sop_uid,
                len(m.data),
                hashlib.sha256(m.data).hexdigest(),
                time.time(),
                dataset_sha256=dataset_sha256(m.data),
            )
            zf.writestr(entry["member"], m.data)
            records.append(entry)
        manifest = part_format.manifest_bytes(site, part_id, study_uid, series_uid, records)
        zf.writestr(part_format.MANIFEST_NAME, manifest, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue(), part_format.manifest_sha256(manifest)


def _retrieve_base(site: str) -> str:
    """Where RetrieveURLs of what was stored in ``site`` start (PS3.18 10.5.3).

    With ``/partitions/<site>`` when the request named the partition, or when the caller reads
    several sites (as QIDO-RS answers then): a plain URL would answer 400 once the same
    StudyInstanceUID is in two of them. A token that may only write gets the plain base.
    """
    base = links.dicomweb_base(router.current_event.raw_event)
    if partition() is not None:
        return f"{base}/partitions/{site}"
    try:
        return partition_base(base, site, store)
    except (Unauthorized, Forbidden):
        return base


def _store(study_uid: str | None) -> Response[str]:
    require(write_scope())
    if study_uid is not None:
        check_uid(study_uid, "StudyInstanceUID")
    event = router.current_event
    boundary = _boundary(event.headers.get("content-type", ""))
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode("latin-1")
    site = _site()
    accepted: dict[str, Accepted] = {}
    failed: list[dict[str, Any]] = []
    for headers, content in split_multipart(body, boundary):
        media = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
        if media != "application/dicom":
            failed.append({"reason": CANNOT_UNDERSTAND})
            continue
        refused = over_limits(content)
        if refused is not None:
            failed.append({"reason": OUT_OF_RESOURCES, "comment": refused})
            continue
        try:
            sop_class, sop_uid, study, series = _read(content)
        except UidRefused as exc:
            failed.append({"reason": INVALID_UID, "comment": str(exc)})
            continue
        except Exception:
            failed.append({"reason": CANNOT_UNDERSTAND})
            continue
        failure = None
        if study_uid is not None and study != study_uid:
            failure = WRONG_STUDY
        # Only the uploader's own site is looked at: another site's holdings are never revealed.
        elif sop_uid in accepted or _indexed_with_same_bytes(site, study, series, sop_uid, content):
            failure = DUPLICATE
        if failure is not None:
            failed.append({"reason": failure, "class": sop_class, "uid": sop_uid})
            continue
        accepted[sop_uid] = Accepted(sop_class, sop_uid, study, series, content)
    by_series: dict[tuple[str, str], list[Accepted]] = {}
    for item in accepted.values():
        by_series.setdefault((item.study_uid, item.series_uid), []).append(item)
    for (study, series), members in by_series.items():
        _put_part(site, study, series, members)
    return _answer(_retrieve_base(site), study_uid, list(accepted.values()), failed)


def _indexed_with_same_bytes(site: str, study: str, series: str, sop_uid: str, data: bytes) -> bool:
    """Whether the site's index holds this instance with these very bytes (a no-op re-send).

    Compared by the data set's SHA-256 when the indexed copy has one (``dataset_sha256``:
    the same data set received by the gateway under other file meta is the same content),
    else by SHA-256 of the file (``fingerprint`` ``sha256:<hex>``), else by CRC-32 and size
    (``member_crc32``), as ingest compares them.
    """
    item = store.get(keys.study_pk(site, study), keys.instance_sk(series, sop_uid))
    if item is None:
        return False
    if item.get("dataset_sha256"):
        return str(item["dataset_sha256"]) == dataset_sha256(data)
    fingerprint = str(item.get("fingerprint", ""))
    if fingerprint.startswith("sha256:"):
        return fingerprint == f"sha256:{hashlib.sha256(data).hexdigest()}"
    crc = f"crc32:{zlib.crc32(data):08x}:{len(data)}"
    return str(item.get("member_crc32") or fingerprint) == crc


def _put_part(site: str, study: str, series: str, members: list[Accepted]) -> None:
    """Create one part object (never overwriting one: a taken key gets a fresh part id)."""
    for _attempt in range(PART_ID_ATTEMPTS):
        part_id = f"stow-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        data, manifest_sha = _zip(study, series, part_id, site, members)
        if objects.create(
            part_format.object_key(study, series, part_id),
            data,
            "application/zip",
            part_format.object_metadata(site, part_id, study, series, len(members), manifest_sha),
        ):
            return
    raise StoreError("no free part key for the upload")


def _answer(
    base: str, study_uid: str | None, accepted: list[Accepted], failed: list[dict[str, Any]]
) -> Response[str]:
    result: dict[str, Any] = {}
    if study_uid is not None:
        result["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study_uid}"]}
    if accepted:
        result["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [a.sop_class]},
                    "00081155": {"vr": "UI", "Value": [a.sop_uid]},
                    "00081190": {
                        "vr": "UR",
                        "Value": [
                            f"{base}/studies/{a.study_uid}/series/{a.series_uid}/instances/{a.sop_uid}"
                        ],
                    },
                }
                for a in accepted
            ],
        }
    if failed:
        items = []
        for f in failed:
            item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [f["reason"]]}}
            if f.get("class"):
                item["00081150"] = {"vr": "UI", "Value": [f["class"]]}
            if f.get("uid"):
                item["00081155"] = {"vr": "UI", "Value": [f["uid"]]}
            if f.get("comment"):
                # Error Comment (0000,0902): why the instance was refused, without any value of it.
                item["00000902"] = {"vr": "LO", "Value": [f["comment"]]}
            items.append(dict(sorted(item.items())))
        result["00081198"] = {"vr": "SQ", "Value": items}
    status = 200 if not failed else (202 if accepted else 409)
    return Response(status, DICOM_JSON, json.dumps(dict(sorted(result.items()))))


@router.post("/dicomweb/studies")
def store_instances() -> Response[str]:
    """Store instances (STOW-RS, PS3.18 10.5).

    Answers with the Store Instances Response Module (PS3.18 10.5.3): 200, 202 or 409.
    """
    return _store(None)


@router.post("/dicomweb/studies/<study_uid>")
def store_study_instances(study_uid: str) -> Response[str]:
    """Store instances of one study (STOW-RS, PS3.18 10.5).

    Instances of another study are refused (failure reason in the response, PS3.18 10.5.3).
    """
    return _store(study_uid)
