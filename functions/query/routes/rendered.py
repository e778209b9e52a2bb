"""Pictures of instances: WADO-RS ``rendered`` (PS3.18 8.3.5 / 10.4) and a PNG preview of a series.

The instance's bytes are read from its member inside the series part (a zip in S3) with ranged
GETs: from the member offset and sizes that ingest recorded on the instance item when they are
there, else through the zip's central directory. numpy, pydicom and Pillow are imported only
when a picture is asked for (query.rendering), so searches do not pay for them at cold start.
"""

from __future__ import annotations

import functools
import struct
import zlib
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from botocore.exceptions import ClientError
from common import keys

from query.dependencies import settings, store
from query.errors import BadRequest, NotFound, StoreError
from query.matching import check_uid
from query.routes.qido import visible_instance, visible_study
from query.store import Item

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

router = APIGatewayHttpRouter()

RENDERED_PARAMETERS = {"accept", "window", "quality", "viewport"}
PREVIEW_PARAMETERS = {"size"}
MAX_PREVIEW_SIZE = 1024
LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
LOCAL_HEADER_SIGNATURE = 0x04034B50
# Enough for the local header, a member name of a UID and a small extra field.
LOCAL_HEADER_READ = 1024
STORED, DEFLATED = 0, 8
# Lambda answers at most 6 MB, and binary bodies travel base64-encoded (4/3 larger).
MAX_RESPONSE_BYTES = 4_400_000
# A member larger than this is not rendered here (Lambda memory; an uncompressed CT is ~0.5 MB).
MAX_MEMBER_BYTES = 256 * 1024 * 1024


class MemberError(Exception):
    """The instance's bytes could not be read from its part."""


@functools.cache
def s3_client() -> S3Client:
    return boto3.client("s3")


def _params(allowed: set[str]) -> dict[str, str]:
    params = dict(router.current_event.query_string_parameters or {})
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unsupported query parameter(s): {', '.join(unknown)}")
    return params


def _json_error(status: int, message: str) -> Response[dict[str, Any]]:
    return Response(status, content_types.APPLICATION_JSON, {"error": message, "status": status})


def _get_range(s3: S3Client, bucket: str, key: str, start: int, end: int) -> bytes:
    try:
        response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")
        return response["Body"].read()
    except ClientError as exc:
        raise MemberError("the series part could not be read") from exc


def _read_at_offset(
    s3: S3Client, bucket: str, key: str, offset: int, compressed: int, size: int, method: int
) -> bytes:
    """Member bytes from its local header offset: two ranged GETs (header, then data)."""
    head = _get_range(s3, bucket, key, offset, offset + LOCAL_HEADER_READ - 1)
    if len(head) < LOCAL_HEADER.size:
        raise MemberError("the member's local header is truncated")
    fields = LOCAL_HEADER.unpack_from(head)
    if fields[0] != LOCAL_HEADER_SIGNATURE:
        raise MemberError("no local header at the recorded member offset")
    start = offset + LOCAL_HEADER.size + fields[9] + fields[10]
    data = _get_range(s3, bucket, key, start, start + compressed - 1) if compressed else b""
    if method == DEFLATED:
        data = zlib.decompress(data, -15, size or zlib.DEF_BUF_SIZE)
    elif method != STORED:
        raise MemberError("unsupported zip compression method")
    return data


def _read_from_directory(s3: S3Client, bucket: str, key: str, member: str) -> bytes:
    """Member bytes through the zip's central directory, read with ranged GETs."""
    import zipfile

    from ingest.s3_reader import S3RangeReader

    try:
        size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        reader = S3RangeReader(s3, bucket, key, size)
        with zipfile.ZipFile(reader) as archive:
            info = archive.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise MemberError("the instance is too large to render here")
            return archive.read(info)
    except (ClientError, KeyError, zipfile.BadZipFile, OSError) as exc:
        raise MemberError("the instance could not be found in its series part") from exc


def instance_bytes(s3: S3Client, bucket: str, instance: Item) -> bytes:
    """The Part 10 bytes of an indexed instance, read from its part in S3."""
    key, member = str(instance["object_key"]), str(instance["member"])
    if instance.get("member_offset") is not None and instance.get("member_compressed_size") is not None:
        size = int(instance.get("member_size") or 0)
        if size > MAX_MEMBER_BYTES:
            raise MemberError("the instance is too large to render here")
        return _read_at_offset(
            s3,
            bucket,
            key,
            int(instance["member_offset"]),
            int(instance["member_compressed_size"]),
            size,
            int(instance.get("member_compress_type") or STORED),
        )
    return _read_from_directory(s3, bucket, key, member)


def _picture(instance: Item, media_type: str, **options: Any) -> Response[Any]:
    from common.decode_limits import LimitExceeded

    from query import rendering

    try:
        data = instance_bytes(s3_client(), settings.bucket_name, instance)
    except MemberError as exc:
        raise StoreError(str(exc)) from exc
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


def middle_instance(study_uid: str, series_uid: str) -> Item:
    """The instance in the middle of the series when ordered by InstanceNumber (then UID)."""
    instances = list(store.study_children(study_uid, keys.instance_prefix(series_uid)))
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
    visible_study(study_uid)
    check_uid(series_uid, "SeriesInstanceUID")
    from query import rendering

    return _picture(middle_instance(study_uid, series_uid), rendering.PNG, max_size=max_size)
