"""WADO-RS retrieve bulk data (PS3.18 10.4.1.1.5): the value of one large element of an instance.

``GET .../instances/{sop}/bulkdata/{path}`` where ``path`` is what the metadata's
``BulkDataURI`` names (``<tag>`` or ``<tag>.<item>.<tag>...``, see query.bulkdata).
Pixel Data is answered as stored: native pixels as one ``application/octet-stream``
part, encapsulated pixels as one part per frame in the frame's media type. A bare
``Accept: application/octet-stream`` (OHIF's ``singlepart: "bulkdata"``) gets the
value without the multipart wrapper.
"""

from __future__ import annotations

import uuid
from typing import Any

from aws_lambda_powertools.event_handler import Response
from common.zip_members import MemberTooLarge

from query import accept
from query.bulkdata import PIXEL_DATA, BadPath, element_value, parse_path
from query.dependencies import objects
from query.errors import BadRequest, NotAcceptable, NotFound
from query.route_table import DocumentedRouter
from query.routes.frames import multipart_body
from query.routes.qido import visible_instance
from query.routes.wado import INLINE_LIMIT, redirect_large

router = DocumentedRouter()

MAX_INSTANCE_BYTES = 512 * 1024 * 1024


def _single_part() -> bool:
    """True for a bare application/octet-stream; multipart otherwise; 406 when neither is acceptable."""
    for media_range in accept.parse(router.current_event.headers.get("accept")):
        if media_range.media_type == "*/*" or (
            media_range.is_multipart and media_range.part_type in (None, "*/*", accept.OCTET_STREAM)
        ):
            return False
        if media_range.media_type == accept.OCTET_STREAM:
            return True
        if media_range.is_multipart and media_range.part_type in accept.FRAME_MEDIA_TYPES.values():
            return False
    raise NotAcceptable('bulk data is offered as multipart/related; type="application/octet-stream"')


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/bulkdata/<path>")
def retrieve_bulkdata(study_uid: str, series_uid: str, sop_uid: str, path: str) -> Response[Any]:
    """The bytes of the element a BulkDataURI names (PS3.18 10.4.1.1.5); Pixel Data as stored."""
    try:
        steps = parse_path(path)
    except BadPath as exc:
        raise BadRequest(str(exc)) from exc
    single = _single_part()
    item = visible_instance(study_uid, series_uid, sop_uid)
    try:
        data = objects.instance_bytes(item, MAX_INSTANCE_BYTES)
    except MemberTooLarge as exc:
        return Response(413, "application/json", {"error": str(exc), "status": 413})
    if len(steps) == 1 and f"{steps[0][0]:08X}" == PIXEL_DATA:
        return _pixel_data(data, single)
    from io import BytesIO

    from pydicom import dcmread

    try:
        ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
    except Exception as exc:
        raise NotFound(f"the instance cannot be parsed: {type(exc).__name__}") from exc
    value = element_value(ds, steps)
    if value is None:
        raise NotFound("no bulk data at this path")
    return _answer([value], accept.OCTET_STREAM, single)


def _pixel_data(data: bytes, single: bool) -> Response[Any]:
    from query.frames import layout_of_bytes
    from query.pixel_layout import FrameError

    try:
        layout = layout_of_bytes(data)
    except FrameError as exc:
        raise NotFound(str(exc)) from exc
    if not layout.encapsulated:
        value = data[layout.value_offset : layout.value_offset + layout.value_length]
        return _answer([value], f"{accept.OCTET_STREAM}; transfer-syntax={layout.transfer_syntax}", single)
    from query.frames import fragments_payload

    frames = [fragments_payload(data[start:end]) for start, end in layout.spans]
    media = accept.FRAME_MEDIA_TYPES.get(layout.transfer_syntax, accept.OCTET_STREAM)
    return _answer(frames, f"{media}; transfer-syntax={layout.transfer_syntax}", single and len(frames) == 1)


def _answer(parts: list[bytes], part_type: str, single: bool) -> Response[Any]:
    if single and len(parts) == 1:
        body, content_type = parts[0], part_type.split(";", maxsplit=1)[0]
    else:
        boundary = uuid.uuid4().hex
        body = multipart_body(parts, part_type, boundary)
        content_type = f'multipart/related; type="{part_type.split(";", maxsplit=1)[0]}"; boundary={boundary}'
    if len(body) > INLINE_LIMIT:
        return redirect_large(iter([body]), content_type)
    return Response(200, content_type, body, headers={"Cache-Control": "private, max-age=3600"})
