"""WADO-RS thumbnails (PS3.18 10.4.1.2.4, 8.3.5.1.2) of a study, a series and an instance.

A thumbnail is a small rendering (JPEG by default, PNG when asked) of a
representative instance: the instance itself, the middle instance of a series
(by InstanceNumber), the middle instance of the study's first series. Rendered
once per instance version, size and media type, and cached in S3 under
``thumbnails/`` (keyed by UIDs, part and member offset: no PHI; a new version of
the instance gets a new thumbnail).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response
from common.decode_limits import LimitExceeded, check_pixel_budget
from common.zip_members import MemberTooLarge

from query.dependencies import objects, store
from query.errors import BadRequest, NotAcceptable, NotFound
from query.matching import check_uid
from query.route_table import DocumentedRouter
from query.routes.qido import visible_instance, visible_study
from query.routes.rendered import middle_instance
from query.store import Item

router = DocumentedRouter()

THUMBNAIL_PREFIX = "thumbnails/"
DEFAULT_SIZE = 128
MAX_SIZE = 512
MAX_MEMBER_BYTES = 256 * 1024 * 1024


def _size() -> int:
    params = router.current_event.query_string_parameters or {}
    unknown = sorted(set(params) - {"viewport", "accept"})
    if unknown:
        raise BadRequest(f"unsupported query parameter(s): {', '.join(unknown)}")
    if "viewport" not in params:
        return DEFAULT_SIZE
    try:
        width, _, height = params["viewport"].partition(",")
        size = max(int(width), int(height or width))
    except ValueError as exc:
        raise BadRequest("viewport must be vw,vh in pixels") from exc
    if not 16 <= size <= MAX_SIZE:
        raise BadRequest(f"viewport must be 16..{MAX_SIZE} pixels")
    return size


def _media_type() -> str:
    from query import rendering

    params = router.current_event.query_string_parameters or {}
    wanted = params.get("accept") or router.current_event.headers.get("accept")
    # A thumbnail defaults to JPEG (small); PNG only when preferred.
    media_type = rendering.choose_media_type(wanted)
    if media_type is None:
        raise NotAcceptable("thumbnails are offered as image/jpeg or image/png")
    if media_type == rendering.PNG and "png" not in (wanted or "").lower():
        return rendering.JPEG
    return media_type


def cache_key(item: Item, size: int, media_type: str) -> str:
    """``thumbnails/<study>/<series>/<sop>/<part>-<member offset>-<size>.<jpg|png>``."""
    extension = "png" if media_type.endswith("png") else "jpg"
    where = f"{item.get('part_id', 'part')}-{item.get('member_offset', 'x')}-{size}"
    return f"{THUMBNAIL_PREFIX}{item['study_uid']}/{item['series_uid']}/{item['sop_uid']}/{where}.{extension}"


def _thumbnail(item: Item) -> Response[Any]:
    from query import rendering

    size, media_type = _size(), _media_type()
    key = cache_key(item, size, media_type)
    cached = objects.get(key)
    if cached is None:
        header = {**_decoded_header(item), "SamplesPerPixel": 3}  # a colour frame at most
        try:
            check_pixel_budget(header)
            data = objects.instance_bytes(item, MAX_MEMBER_BYTES)
        except (LimitExceeded, MemberTooLarge) as exc:
            return Response(413, "application/json", {"error": str(exc), "status": 413})
        try:
            cached = rendering.render(data, media_type, max_size=size, quality=80).body
        except rendering.RenderError as exc:
            return Response(415, "application/json", {"error": f"no thumbnail: {exc}", "status": 415})
        objects.put(key, cached, media_type)
    return Response(200, media_type, cached, headers={"Cache-Control": "private, max-age=3600"})


def _decoded_header(item: Item) -> dict[str, Any]:
    header = json.loads(item.get("json") or "{}")
    values = {}
    for tag, keyword in (("00280010", "Rows"), ("00280011", "Columns"), ("00280100", "BitsAllocated")):
        value = ((header.get(tag) or {}).get("Value") or [None])[0]
        if value is not None:
            values[keyword] = value
    return values


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/thumbnail")
def instance_thumbnail(study_uid: str, series_uid: str, sop_uid: str) -> Response[Any]:
    """A small JPEG (or PNG) of the instance's first frame (PS3.18 10.4.1.2.4)."""
    return _thumbnail(visible_instance(study_uid, series_uid, sop_uid))


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/thumbnail")
def series_thumbnail(study_uid: str, series_uid: str) -> Response[Any]:
    """A small picture of the series' middle instance (PS3.18 10.4.1.2.4)."""
    study = visible_study(study_uid)
    check_uid(series_uid, "SeriesInstanceUID")
    return _thumbnail(middle_instance(study, series_uid))


@router.get("/dicomweb/studies/<study_uid>/thumbnail")
def study_thumbnail(study_uid: str) -> Response[Any]:
    """A small picture of the middle instance of the study's first series (by SeriesNumber)."""
    study = visible_study(study_uid)
    series = list(store.study_children(study, "SERIES#"))
    if not series:
        raise NotFound("study has no series")

    def order(item: Item) -> tuple[int, str]:
        number = str(item.get("SeriesNumber", "") or "")
        return (int(number) if number.lstrip("-").isdigit() else 1 << 30, str(item["series_uid"]))

    first = min(series, key=order)
    return _thumbnail(middle_instance(study, str(first["series_uid"])))
