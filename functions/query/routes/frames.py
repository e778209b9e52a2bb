"""WADO-RS retrieve frames (PS3.18 10.4.1.1.4, 8.7.3.5): one ranged GET of each frame's bytes.

``GET /dicomweb/studies/{s}/series/{se}/instances/{i}/frames/{1,2,...}`` answers
``multipart/related`` with one part per frame, in the order asked. Each part starts
``--<boundary>`` / ``Content-Type: <media type>; transfer-syntax=<uid>`` / blank line,
which is exactly what cornerstone's dicomImageLoader (OHIF's image loader) parses
(``extractMultipart``: the first line starting ``--`` is the boundary, the line
starting ``Content-Type:`` gives the transfer syntax). ``transfer-syntax=*`` answers
frames as stored; otherwise frames are decoded to native little-endian pixels or,
when that is not acceptable either, 406.
"""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from common.decode_limits import LimitExceeded
from common.zip_members import MemberError, MemberTooLarge, ObjectMissing

from query import accept
from query.dependencies import objects
from query.errors import BadRequest, NotAcceptable, NotFound, StoreError
from query.route_table import DocumentedRouter
from query.routes.qido import visible_instance
from query.routes.wado import INLINE_LIMIT, redirect_large

if TYPE_CHECKING:
    from query.frames import FrameLocator

router = DocumentedRouter()

MAX_FRAMES_PER_REQUEST = 1000
# Stored bytes read for one request: the answer goes through S3 (303) when it is large.
MAX_FRAME_BYTES = 512 * 1024 * 1024


@functools.cache
def frame_locator() -> FrameLocator:
    """The frame locator over the query function's member reader (pydicom loads on first use)."""
    from query.frames import FrameLocator

    return FrameLocator(lambda: objects.members)


def frame_numbers(text: str) -> list[int]:
    """``1,3,5`` as [1, 3, 5]; 400 for anything but a comma list of positive integers."""
    numbers = []
    for piece in text.split(","):
        number = piece.strip()
        if not number.isdigit() or int(number) < 1:
            raise BadRequest("frame list: expected comma-separated frame numbers starting at 1")
        numbers.append(int(number))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise BadRequest(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return numbers


def multipart_body(parts: list[bytes], content_type: str, boundary: str) -> bytes:
    """PS3.18 8.7.1 multipart/related body: no preamble, CRLF line ends, closing delimiter."""
    chunks = []
    for data in parts:
        chunks += [f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<frame_list>")
def retrieve_frames(study_uid: str, series_uid: str, sop_uid: str, frame_list: str) -> Response[Any]:
    """Frames of one instance as multipart/related (PS3.18 10.4.1.1.4): stored, or decoded, or 406."""
    numbers = frame_numbers(frame_list)
    item = visible_instance(study_uid, series_uid, sop_uid)
    stored = str(item.get("transfer_syntax") or accept.IMPLICIT_VR_LITTLE_ENDIAN)
    if stored == accept.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        stored = accept.EXPLICIT_VR_LITTLE_ENDIAN  # frames of a deflated data set are served inflated
    header = router.current_event.headers.get("accept")
    answer = accept.negotiate_frames(header, stored, can_decode=True)
    if answer is not None and answer.decode:
        from query.transcode import can_decode

        if not can_decode(stored):
            answer = accept.negotiate_frames(header, stored, can_decode=False)
    if answer is None:
        offered = accept.FRAME_MEDIA_TYPES.get(stored, accept.OCTET_STREAM)
        raise NotAcceptable(
            f'frames of this instance are offered as multipart/related; type="{offered}" '
            f"(transfer-syntax {stored} or *) or decoded to application/octet-stream"
        )
    from query.pixel_layout import FrameError, NoSuchFrame

    try:
        layout, frames = frame_locator().frames(item, numbers, MAX_FRAME_BYTES)
        if answer.decode:
            from query.transcode import decode_frame

            frames = [decode_frame(layout, f) for f in frames]
    except NoSuchFrame as exc:
        raise NotFound(str(exc)) from exc
    except ObjectMissing as exc:
        raise NotFound("stored object not found") from exc
    except (MemberTooLarge, LimitExceeded) as exc:
        return Response(413, "application/json", {"error": str(exc), "status": 413})
    except FrameError as exc:
        if answer.decode:
            raise NotAcceptable(f"the frames cannot be decoded here: {exc}") from exc
        raise NotFound(str(exc)) from exc
    except MemberError as exc:
        raise StoreError(str(exc)) from exc
    if not answer.multipart and len(frames) == 1:
        return _answer(frames[0], answer.media_type)
    boundary = uuid.uuid4().hex
    body = multipart_body(frames, answer.part_content_type(), boundary)
    content_type = (
        f'multipart/related; type="{answer.media_type}"; transfer-syntax={answer.transfer_syntax}; '
        f"boundary={boundary}"
    )
    return _answer(body, content_type)


def _answer(body: bytes, content_type: str) -> Response[Any]:
    if len(body) > INLINE_LIMIT:
        return redirect_large(iter([body]), content_type)
    return Response(200, content_type, body, headers={"Cache-Control": "private, max-age=3600"})
