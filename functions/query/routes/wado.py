"""WADO-RS (PS3.18 10.4): metadata from the stored DICOM JSON, instances as multipart/related.

Bytes come from the members of the part zips (one ranged GET per instance when
the index knows the member's position). A Lambda response is at most 6 MB
(base64 makes bodies a third larger), so an answer above ``INLINE_LIMIT`` is
written once under ``retrieve/`` in the bucket and answered with ``303 See
Other`` to a presigned GET valid ``LINK_SECONDS``: HTTP clients follow it and
receive the same multipart body with the same Content-Type.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools.event_handler import Response
from common import keys
from common.dicom_json import DicomJson

from query import accept
from query.bulkdata import instance_url, with_bulk_data_uris
from query.dependencies import objects, store
from query.errors import NotAcceptable, NotFound
from query.matching import check_uid
from query.route_table import DocumentedRouter
from query.routes.qido import site_base, visible_instance, visible_study
from query.store import Item

router = DocumentedRouter()

DICOM_JSON = "application/dicom+json"
INLINE_LIMIT = 4 * 1024 * 1024
LINK_SECONDS = 900
RETRIEVE_PREFIX = "retrieve/"


def _series_items(study: Item, series_uid: str | None) -> list[Item]:
    if series_uid is None:
        return list(store.study_children(study, "SERIES#"))
    check_uid(series_uid, "SeriesInstanceUID")
    series = store.in_study(study, keys.series_sk(series_uid))
    if series is None:
        raise NotFound("series not found")
    return [series]


def _instances(study_uid: str, series_uid: str | None, sop_uid: str | None) -> list[Item]:
    if sop_uid is not None:
        assert series_uid is not None
        return [visible_instance(study_uid, series_uid, sop_uid)]
    study = visible_study(study_uid)
    found: list[Item] = []
    for series in _series_items(study, series_uid):
        found.extend(store.study_children(study, keys.instance_prefix(str(series["series_uid"]))))
    if not found:
        raise NotFound("no instances")
    return found


def _metadata(instances: list[Item]) -> list[DicomJson]:
    """Stored headers of these instances, one GET per part they come from."""
    wanted = {str(i["sop_uid"]) for i in instances}
    by_part: dict[str, str] = {}
    for item in instances:
        by_part.setdefault(
            str(item["part_id"]),
            keys.metadata_key(str(item["study_uid"]), str(item["series_uid"]), str(item["part_id"])),
        )
    headers: dict[str, DicomJson] = {}
    for metadata_key in by_part.values():
        for header in objects.metadata(metadata_key):
            sop = str(((header.get("00080018") or {}).get("Value") or [""])[0])
            if sop in wanted:
                headers.setdefault(sop, header)
    return [
        with_bulk_data_uris(
            headers[str(i["sop_uid"])],
            instance_url(site_base(i), str(i["study_uid"]), str(i["series_uid"]), str(i["sop_uid"])),
            str(i.get("transfer_syntax") or ""),
        )
        for i in instances
        if str(i["sop_uid"]) in headers
    ]


def _metadata_response(instances: list[Item]) -> Response[Any]:
    body = json.dumps(_metadata(instances), ensure_ascii=False)
    if len(body) > INLINE_LIMIT:  # characters: at least as many bytes
        return redirect_large(iter([body.encode()]), DICOM_JSON)
    return Response(200, DICOM_JSON, body)


@router.get("/dicomweb/studies/<study_uid>/metadata")
def study_metadata(study_uid: str) -> Response[Any]:
    """Retrieve the metadata of a study's instances (WADO-RS, PS3.18 10.4.1.1.2).

    DICOM JSON (PS3.18 F.2) with BulkDataURIs; 404 when the study is not visible, 303 to a
    presigned link above the Lambda response limit.
    """
    return _metadata_response(_instances(study_uid, None, None))


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/metadata")
def series_metadata(study_uid: str, series_uid: str) -> Response[Any]:
    """Retrieve the metadata of a series' instances (WADO-RS, PS3.18 10.4.1.1.2)."""
    return _metadata_response(_instances(study_uid, series_uid, None))


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/metadata")
def instance_metadata(study_uid: str, series_uid: str, sop_uid: str) -> Response[Any]:
    """Retrieve the metadata of an instance (WADO-RS, PS3.18 10.4.1.1.2)."""
    return _metadata_response(_instances(study_uid, series_uid, sop_uid))


def _negotiate(single_allowed: bool) -> accept.InstanceAnswer:
    """Single part or multipart, and the transfer syntax asked for (PS3.18 8.7.3.5.1), else 406."""
    answer = accept.negotiate_instances(router.current_event.headers.get("accept"), single_allowed)
    if answer is None:
        raise NotAcceptable('retrieve answers multipart/related; type="application/dicom"')
    return answer


def _instance_data(item: Item, transfer_syntax: str) -> tuple[bytes, str]:
    """(Part 10 bytes, their transfer syntax) in ``transfer_syntax`` (``*``: as stored), else 406."""
    stored = str(item.get("transfer_syntax", "") or "")
    if transfer_syntax in (accept.ANY_TRANSFER_SYNTAX, stored):
        return objects.instance_bytes(item), stored
    if transfer_syntax != accept.EXPLICIT_VR_LITTLE_ENDIAN:
        raise NotAcceptable(
            f"instances are offered as stored ({stored}, transfer-syntax=*) or in "
            f"{accept.EXPLICIT_VR_LITTLE_ENDIAN}"
        )
    from common.decode_limits import LimitExceeded

    from query.pixel_layout import FrameError
    from query.transcode import to_explicit_little_endian

    try:
        return to_explicit_little_endian(objects.instance_bytes(item)), accept.EXPLICIT_VR_LITTLE_ENDIAN
    except (FrameError, LimitExceeded) as exc:
        raise NotAcceptable(f"the instance cannot be transcoded to Explicit VR Little Endian: {exc}") from exc


def _multipart(instances: list[Item], boundary: str, transfer_syntax: str) -> Iterator[bytes]:
    for item in instances:
        data, ts = _instance_data(item, transfer_syntax)
        ts_param = f"; transfer-syntax={ts}" if ts else ""
        yield f"--{boundary}\r\nContent-Type: application/dicom{ts_param}\r\n\r\n".encode()
        yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _retrieve(instances: list[Item], single_allowed: bool) -> Response[Any]:
    answer = _negotiate(single_allowed)
    if answer.single:
        data, _ts = _instance_data(instances[0], answer.transfer_syntax)
        if len(data) <= INLINE_LIMIT:
            return Response(200, "application/dicom", data)
        return redirect_large(iter([data]), "application/dicom")
    boundary = uuid.uuid4().hex
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    known = sum(int(i.get("member_size", 0) or 0) for i in instances)
    if known > INLINE_LIMIT:
        return redirect_large(_multipart(instances, boundary, answer.transfer_syntax), content_type)
    chunks: list[bytes] = []
    size = 0
    stream = _multipart(instances, boundary, answer.transfer_syntax)
    for chunk in stream:
        chunks.append(chunk)
        size += len(chunk)
        if size > INLINE_LIMIT:
            return redirect_large(_chain(chunks, stream), content_type)
    return Response(200, content_type, b"".join(chunks))


def _chain(first: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


def redirect_large(chunks: Iterator[bytes], content_type: str) -> Response[Any]:
    """Write an answer too large for a Lambda response under ``retrieve/`` and answer 303 to it."""
    key = f"{RETRIEVE_PREFIX}{uuid.uuid4().hex}"
    objects.put_stream(key, chunks, content_type)
    url = objects.presigned_get(key, LINK_SECONDS)
    body = json.dumps({"url": url, "expires_in": LINK_SECONDS, "reason": "larger than a Lambda response"})
    return Response(303, "application/json", body, headers={"Location": url})


@router.get("/dicomweb/studies/<study_uid>")
def retrieve_study(study_uid: str) -> Response[Any]:
    """Retrieve the instances of a study (WADO-RS, PS3.18 10.4.1.1.1).

    multipart/related of application/dicom parts, transcoded as the Accept header asks or
    406; 404 when not visible, 303 to a presigned link above the Lambda response limit.
    """
    return _retrieve(_instances(study_uid, None, None), single_allowed=False)


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>")
def retrieve_series(study_uid: str, series_uid: str) -> Response[Any]:
    """Retrieve the instances of a series (WADO-RS, PS3.18 10.4.1.1.1)."""
    return _retrieve(_instances(study_uid, series_uid, None), single_allowed=False)


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>")
def retrieve_instance(study_uid: str, series_uid: str, sop_uid: str) -> Response[Any]:
    """Retrieve an instance (WADO-RS, PS3.18 10.4.1.1.1): multipart/related, or application/dicom."""
    return _retrieve(_instances(study_uid, series_uid, sop_uid), single_allowed=True)
