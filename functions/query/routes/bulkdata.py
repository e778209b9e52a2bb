"""WADO-RS retrieve bulk data (PS3.18 10.4.1.1.5): the value of one large element of an instance.

``GET .../instances/{sop}/bulkdata/{path}`` where ``path`` is what the metadata's
``BulkDataURI`` names (``<tag>`` or ``<tag>.<item>.<tag>...``, see query.bulkdata).
Pixel Data is answered as stored: native pixels as one ``application/octet-stream``
part, encapsulated pixels as one part per frame in the frame's media type. A bare
``Accept: application/octet-stream`` (OHIF's ``singlepart: "bulkdata"``) gets the
value without the multipart wrapper.

Byte ranges (RFC 9110 14): one ``Range: bytes=a-b`` / ``a-`` / ``-n`` selects bytes of
the value when the answer is one value (every element but multi-frame encapsulated
Pixel Data, whose frames are separate parts and for which Range is ignored). The
answer is 206 with ``Content-Range`` (the selected bytes alone, or as the one part of
the multipart answer, as dicomweb-client's ``byte_range`` expects), 416 with a JSON body
when the range selects nothing. Native Pixel Data in a STORED member is read with ONE
ranged GET of just those bytes (its position comes from the cached pixel layout of
query.frames); other values are read as before and cut.
"""

from __future__ import annotations

import uuid
from typing import Any

from aws_lambda_powertools.event_handler import Response
from common.zip_members import MemberError, MemberLocation, MemberTooLarge, ObjectMissing

from query import accept, byte_range
from query.bulkdata import PIXEL_DATA, BadPath, element_value, parse_path
from query.dependencies import objects
from query.errors import BadRequest, NotAcceptable, NotFound, StoreError
from query.route_table import DocumentedRouter
from query.routes.frames import frame_locator, multipart_body
from query.routes.qido import visible_instance
from query.routes.wado import INLINE_LIMIT, redirect_large
from query.store import Item

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
    headers = router.current_event.headers
    # No validators (ETag, Last-Modified) are sent, so no If-Range can match: whole value (RFC 9110 13.1.5).
    wanted = None if headers.get("if-range") else byte_range.parse(headers.get("range"))
    item = visible_instance(study_uid, series_uid, sop_uid)
    pixel_data = len(steps) == 1 and f"{steps[0][0]:08X}" == PIXEL_DATA
    try:
        if pixel_data and wanted is not None:
            ranged = _native_pixel_range(item, wanted, single)
            if ranged is not None:
                return ranged
        data = objects.instance_bytes(item, MAX_INSTANCE_BYTES)
        if pixel_data:
            return _pixel_data(data, single, wanted)
    except MemberTooLarge as exc:
        return Response(413, "application/json", {"error": str(exc), "status": 413})
    except byte_range.RangeNotSatisfiable as exc:
        return _not_satisfiable(exc)
    from io import BytesIO

    from pydicom import dcmread

    try:
        ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
    except Exception as exc:
        raise NotFound(f"the instance cannot be parsed: {type(exc).__name__}") from exc
    value = element_value(ds, steps)
    if value is None:
        raise NotFound("no bulk data at this path")
    try:
        return _answer([value], accept.OCTET_STREAM, single, wanted)
    except byte_range.RangeNotSatisfiable as exc:
        return _not_satisfiable(exc)


def _native_pixel_range(item: Item, wanted: byte_range.RangeRequest, single: bool) -> Response[Any] | None:
    """206 with bytes of native Pixel Data, read with one ranged GET; None when it is not that case.

    Raises RangeNotSatisfiable, NotFound (no pixel data, part gone), StoreError.
    """
    from query.accept import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    from query.pixel_layout import FrameError

    location = MemberLocation.of_item(item)
    if not location.random_access or item.get("transfer_syntax") == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return None  # no random access into the member: cut from the whole value
    try:
        layout = frame_locator().layout(item, location)
        if layout.encapsulated:
            return None
        first, last = wanted.resolve(layout.value_length)
        base = layout.value_offset
        value = objects.members.read_range(location, base + first, base + last)
    except FrameError as exc:
        raise NotFound(str(exc)) from exc
    except ObjectMissing as exc:
        raise NotFound("stored object not found") from exc
    except MemberError as exc:
        raise StoreError(str(exc)) from exc
    part_type = f"{accept.OCTET_STREAM}; transfer-syntax={layout.transfer_syntax}"
    return _partial(value, (first, last, layout.value_length), part_type, single)


def _pixel_data(data: bytes, single: bool, wanted: byte_range.RangeRequest | None) -> Response[Any]:
    from query.frames import layout_of_bytes
    from query.pixel_layout import FrameError

    try:
        layout = layout_of_bytes(data)
    except FrameError as exc:
        raise NotFound(str(exc)) from exc
    if not layout.encapsulated:
        value = data[layout.value_offset : layout.value_offset + layout.value_length]
        part_type = f"{accept.OCTET_STREAM}; transfer-syntax={layout.transfer_syntax}"
        return _answer([value], part_type, single, wanted)
    from query.frames import fragments_payload

    frames = [fragments_payload(data[start:end]) for start, end in layout.spans]
    media = accept.FRAME_MEDIA_TYPES.get(layout.transfer_syntax, accept.OCTET_STREAM)
    part_type = f"{media}; transfer-syntax={layout.transfer_syntax}"
    return _answer(frames, part_type, single and len(frames) == 1, wanted)


def _answer(
    parts: list[bytes], part_type: str, single: bool, wanted: byte_range.RangeRequest | None = None
) -> Response[Any]:
    """The value(s) as one body or multipart; with one value and a range, the range (206)."""
    if len(parts) == 1 and wanted is not None:
        first, last = wanted.resolve(len(parts[0]))
        return _partial(parts[0][first : last + 1], (first, last, len(parts[0])), part_type, single)
    body, content_type = _body(parts, part_type, single)
    if len(body) > INLINE_LIMIT:
        return redirect_large(iter([body]), content_type)
    headers = {"Cache-Control": "private, max-age=3600"}
    if len(parts) == 1:
        headers["Accept-Ranges"] = "bytes"
    return Response(200, content_type, body, headers=headers)


def _body(parts: list[bytes], part_type: str, single: bool) -> tuple[bytes, str]:
    if single and len(parts) == 1:
        return parts[0], part_type.split(";", maxsplit=1)[0]
    boundary = uuid.uuid4().hex
    body = multipart_body(parts, part_type, boundary)
    return body, f'multipart/related; type="{part_type.split(";", maxsplit=1)[0]}"; boundary={boundary}'


def _partial(value: bytes, span: tuple[int, int, int], part_type: str, single: bool) -> Response[Any]:
    """206 Partial Content: bytes ``first..last`` of a value of ``length`` bytes (RFC 9110 15.3.7)."""
    body, content_type = _body([value], part_type, single)
    if len(body) > INLINE_LIMIT:  # too large for a Lambda response: the range itself, through S3
        return redirect_large(iter([body]), content_type)
    headers = {
        "Content-Range": byte_range.content_range(*span),
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
    }
    return Response(206, content_type, body, headers=headers)


def _not_satisfiable(exc: byte_range.RangeNotSatisfiable) -> Response[Any]:
    """416 with a JSON body and ``Content-Range: bytes */length`` (RFC 9110 15.5.17)."""
    return Response(
        416,
        "application/json",
        {"error": str(exc), "status": 416},
        headers={"Content-Range": f"bytes */{exc.length}", "Accept-Ranges": "bytes"},
    )
