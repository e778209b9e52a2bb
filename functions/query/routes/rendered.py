"""Pictures of instances: WADO-RS ``rendered`` (PS3.18 8.3.5 / 10.4) and a PNG preview of a series.

The instance's bytes are read from its member inside the series part (a zip in S3) by the one
member reader (query.objects over common.zip_members): one ranged GET when ingest recorded the
member's position, else through the zip's central directory. numpy, pydicom and Pillow are imported only
when a picture is asked for (query.rendering), so searches do not pay for them at cold start.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from common import keys
from common.zip_members import MemberTooLarge

from query.dependencies import objects, store
from query.errors import BadRequest, NotFound
from query.matching import check_uid
from query.route_table import DocumentedRouter
from query.routes.qido import visible_instance, visible_study
from query.store import Item

router = DocumentedRouter()

RENDERED_PARAMETERS = {"accept", "window", "quality", "viewport"}
PREVIEW_PARAMETERS = {"size"}
MAX_PREVIEW_SIZE = 1024
# Lambda answers at most 6 MB, and binary bodies travel base64-encoded (4/3 larger).
MAX_RESPONSE_BYTES = 4_400_000
# A member larger than this is not rendered here (Lambda memory; an uncompressed CT is ~0.5 MB).
MAX_MEMBER_BYTES = 256 * 1024 * 1024


def _params(allowed: set[str]) -> dict[str, str]:
    params = dict(router.current_event.query_string_parameters or {})
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unsupported query parameter(s): {', '.join(unknown)}")
    return params


def _json_error(status: int, message: str) -> Response[dict[str, Any]]:
    return Response(status, content_types.APPLICATION_JSON, {"error": message, "status": status})


def _picture(instance: Item, media_type: str, **options: Any) -> Response[Any]:
    from common.decode_limits import LimitExceeded

    from query import rendering

    try:
        data = objects.instance_bytes(instance, MAX_MEMBER_BYTES)
    except MemberTooLarge:
        return _json_error(413, "the instance is too large to render here")
    try:
        picture = rendering.render(data, media_type, **options)
    except LimitExceeded as exc:
        # Checked from the header before decoding (common.decode_limits): bytes, not time.
        return _json_error(413, f"the instance is over a decode limit: {exc}")
    except rendering.RenderError as exc:
        return _json_error(415, f"the instance cannot be rendered: {exc}")
    if len(picture.body) > MAX_RESPONSE_BYTES:
        return _json_error(
            413,
            "the rendered image is larger than the API's response limit: "
            "ask for image/jpeg or a smaller viewport=vw,vh",
        )
    return Response(
        200,
        picture.media_type,
        picture.body,
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/rendered")
def rendered_instance(study_uid: str, series_uid: str, sop_uid: str) -> Response[Any]:
    """First frame as PNG or JPEG (``Accept`` or ``accept=``), windowed, scaled to a viewport."""
    from query import rendering

    params = _params(RENDERED_PARAMETERS)
    accept = params.get("accept") or router.current_event.headers.get("accept")
    media_type = rendering.choose_media_type(accept)
    if media_type is None:
        return _json_error(406, "rendered media types offered: image/png, image/jpeg")
    window = None
    viewport = None
    quality = 90
    try:
        if "window" in params:
            window = rendering.Window.parse(params["window"])
        if "viewport" in params:
            viewport = rendering.parse_viewport(params["viewport"])
        if "quality" in params:
            quality = int(params["quality"])
    except (rendering.RenderError, ValueError) as exc:
        raise BadRequest(f"bad rendering parameter: {exc}") from exc
    if not 1 <= quality <= 100:
        raise BadRequest("quality must be 1..100")
    instance = visible_instance(study_uid, series_uid, sop_uid)
    return _picture(instance, media_type, window=window, quality=quality, viewport=viewport)


def middle_instance(study: Item, series_uid: str) -> Item:
    """The instance in the middle of the series when ordered by InstanceNumber (then UID)."""
    instances = list(store.study_children(study, keys.instance_prefix(series_uid)))
    if not instances:
        raise NotFound("series not found or has no instances")

    def order(item: Item) -> tuple[int, int, str]:
        number = item.get("InstanceNumber")
        return (0, int(number), str(item["sop_uid"])) if number is not None else (1, 0, str(item["sop_uid"]))

    instances.sort(key=order)
    return instances[(len(instances) - 1) // 2]


@router.get("/api/studies/<study_uid>/series/<series_uid>/preview.png")
def series_preview(study_uid: str, series_uid: str) -> Response[Any]:
    """PNG of the series' middle instance, at most ``size`` pixels on its longer side."""
    params = _params(PREVIEW_PARAMETERS)
    max_size = None
    if "size" in params:
        try:
            max_size = int(params["size"])
        except ValueError as exc:
            raise BadRequest("size must be an integer") from exc
        if not 16 <= max_size <= MAX_PREVIEW_SIZE:
            raise BadRequest(f"size must be 16..{MAX_PREVIEW_SIZE}")
    study = visible_study(study_uid)
    check_uid(series_uid, "SeriesInstanceUID")
    from query import rendering

    return _picture(middle_instance(study, series_uid), rendering.PNG, max_size=max_size)
