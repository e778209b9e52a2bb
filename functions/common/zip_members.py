"""Read one member of a series part (a zip in S3) with ranged GETs, within size limits.

The one member reader of the code asset: ingest parses local headers with
:func:`data_start`, and every query route (WADO-RS retrieve, frames, bulk data,
rendered, thumbnails) reads members through :class:`MemberReader`.

Where a member is comes from the instance's index item (written by ingest):
``object_version`` (the S3 VersionId of the part object ingest read: every read passes it,
so the bytes served are the bytes indexed even if the key were written again),
``member_offset`` (its local header), ``member_data_offset`` (its first data byte),
``member_compressed_size``, ``member_size`` and ``member_compress_type`` (0 stored,
8 deflate). With them a member, or a byte range of a STORED member, is ONE ranged
GET. Without them (items indexed before ingest recorded offsets) the zip's central
directory is read through :class:`common.s3_reader.S3RangeReader`.

Limits: nothing larger than the caller's ``max_bytes`` is fetched or inflated, and a
deflated member is inflated with an output bound, so a zip bomb costs at most the limit.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from common.s3_reader import S3RangeReader

LOCAL_HEADER = struct.Struct("<4s5H3L2H")
LOCAL_SIGNATURE = b"PK\x03\x04"
STORED, DEFLATED = 0, 8
# Room for the local header's name and extra field (zip64 sizes, timestamps) fetched in the same GET.
HEADER_ALLOWANCE = 30 + 128 + 128
# Default bound of one member read: far above an instance, far below the function's memory.
DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024


class MemberError(Exception):
    """The member cannot be read from its part (message safe for clients: no PHI)."""


class ObjectMissing(MemberError):
    """The part object is not in the bucket."""


class MemberTooLarge(MemberError):
    """The member (or the range asked for) is larger than the caller's limit."""


def data_start(block: bytes, header_offset: int) -> int:
    """Offset in the object of a member's first data byte, from the bytes at its local header.

    ``block`` starts at the local header (at least 30 bytes). Raises :class:`MemberError`
    when the bytes are not a local header (PKWARE APPNOTE 4.3.7).
    """
    if len(block) < LOCAL_HEADER.size:
        raise MemberError("truncated zip member (local header)")
    fields = LOCAL_HEADER.unpack_from(block)
    if fields[0] != LOCAL_SIGNATURE:
        raise MemberError("bad zip local header")
    return header_offset + LOCAL_HEADER.size + int(fields[9]) + int(fields[10])


@dataclass(frozen=True)
class MemberLocation:
    """Where one member's bytes are: the part's object key and the member's zip entry."""

    object_key: str
    name: str
    size: int | None = None
    compressed_size: int | None = None
    compress_type: int = STORED
    header_offset: int | None = None
    data_offset: int | None = None
    # The object version ingest read (versioned bucket); None for items indexed without one.
    version_id: str | None = None

    @classmethod
    def of_item(cls, item: Mapping[str, Any]) -> MemberLocation:
        """The location an instance's index item records (``object_key``, ``object_version``,
        ``member``, ``member_*``)."""

        def number(name: str) -> int | None:
            value = item.get(name)
            return None if value is None or value == "" else int(value)

        return cls(
            object_key=str(item["object_key"]),
            name=str(item.get("member", "")),
            size=number("member_size"),
            compressed_size=number("member_compressed_size"),
            compress_type=number("member_compress_type") or STORED,
            header_offset=number("member_offset"),
            data_offset=number("member_data_offset"),
            version_id=str(item.get("object_version") or "") or None,
        )

    @property
    def random_access(self) -> bool:
        """True when byte ranges of the member are byte ranges of the object (STORED)."""
        return self.compress_type == STORED


class MemberReader:
    """Ranged reads of zip members in one bucket; counts requests and bytes for benchmarks.

    ``s3`` makes the client on first use, so a route that reads nothing never builds one.
    """

    def __init__(self, s3: Callable[[], S3Client], bucket: str) -> None:
        self._factory = s3
        self._client: S3Client | None = None
        self.bucket = bucket
        self.requests = 0
        self.bytes_fetched = 0

    @property
    def s3(self) -> S3Client:
        """The S3 client (made on first use)."""
        if self._client is None:
            self._client = self._factory()
        return self._client

    def get_range(self, key: str, start: int, end: int, version_id: str | None = None) -> bytes:
        """Bytes ``start..end`` (inclusive) of an object (of its version ``version_id`` when given):
        one ranged GET.

        Raises :class:`ObjectMissing` or :class:`MemberError` when S3 refuses.
        """
        try:
            response = self.s3.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}", **_version(version_id)
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound"):
                raise ObjectMissing("stored object not found") from exc
            raise MemberError(f"ranged GET failed: {code}") from exc
        data = response["Body"].read()
        self.requests += 1
        self.bytes_fetched += len(data)
        return data

    def data_offset(self, location: MemberLocation) -> int:
        """Offset in the object of the member's first data byte (one small GET when not recorded)."""
        if location.data_offset is not None:
            return location.data_offset
        if location.header_offset is None:
            return self._directory_entry(location)[1]
        name_length = len(location.name.encode())
        end = location.header_offset + HEADER_ALLOWANCE + name_length - 1
        return data_start(self._get(location, location.header_offset, end), location.header_offset)

    def read(self, location: MemberLocation, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
        """The member's uncompressed bytes: one ranged GET when the index recorded its position.

        Raises :class:`MemberTooLarge` when it is larger than ``max_bytes`` (checked before
        anything is fetched when the size is known, and bounded while inflating).
        """
        if location.size is not None and location.size > max_bytes:
            raise MemberTooLarge(f"member of {location.size} bytes exceeds the limit of {max_bytes}")
        if location.compressed_size is None or location.header_offset is None:
            return self._read_by_directory(location, max_bytes)
        compressed = location.compressed_size
        if location.data_offset is not None:
            raw = self._get(location, location.data_offset, location.data_offset + compressed - 1)
        else:
            name_length = len(location.name.encode())
            start = location.header_offset
            block = self._get(location, start, start + HEADER_ALLOWANCE + name_length + compressed - 1)
            offset = data_start(block, start) - start
            raw = block[offset : offset + compressed]
            if len(raw) < compressed:  # a larger extra field than allowed for: fetch the rest
                rest = self._get(location, start + len(block), start + offset + compressed - 1)
                raw = (block + rest)[offset : offset + compressed]
        if compressed and not raw:
            raise MemberError("zip member beyond the end of its part")
        return _uncompress(raw, location.compress_type, max_bytes)

    def read_range(self, location: MemberLocation, start: int, end: int) -> bytes:
        """Bytes ``start..end`` (inclusive, offsets within the member's data) of a STORED member.

        One ranged GET when the data offset is recorded. Raises :class:`MemberError` for a
        compressed member (no random access: read it whole with :meth:`read`).
        """
        if not location.random_access:
            raise MemberError("compressed zip member: no random access")
        if start < 0 or end < start or (location.size is not None and end >= location.size):
            raise MemberError("range outside the member")
        base = self.data_offset(location)
        return self._get(location, base + start, base + end)

    def range_reader(self, location: MemberLocation) -> S3RangeReader:
        """A seekable reader over the whole object (for walks over a member's structure)."""
        from common.s3_reader import S3RangeReader

        size = self._object_size(location)
        return S3RangeReader(
            self.s3,
            self.bucket,
            location.object_key,
            size,
            version_id=location.version_id,
            fetcher=self._counted(location),
        )

    def _get(self, location: MemberLocation, start: int, end: int) -> bytes:
        return self.get_range(location.object_key, start, end, location.version_id)

    def _counted(self, location: MemberLocation) -> Callable[[int, int], bytes]:
        def fetch(start: int, end: int) -> bytes:
            return self._get(location, start, end)

        return fetch

    def _object_size(self, location: MemberLocation) -> int:
        try:
            head = self.s3.head_object(
                Bucket=self.bucket, Key=location.object_key, **_version(location.version_id)
            )
        except ClientError as exc:
            raise ObjectMissing("stored object not found") from exc
        self.requests += 1
        return int(head["ContentLength"])

    def _directory_entry(self, location: MemberLocation) -> tuple[zipfile.ZipInfo, int]:
        """The member's central directory entry and data offset (ranged reads; no offsets recorded)."""
        reader = self.range_reader(location)
        try:
            with zipfile.ZipFile(cast(IO[bytes], reader)) as archive:
                info = archive.getinfo(location.name)
        except (KeyError, zipfile.BadZipFile, OSError, ValueError) as exc:
            raise MemberError("the instance could not be found in its series part") from exc
        block = reader.fetch(
            info.header_offset, info.header_offset + HEADER_ALLOWANCE + len(location.name) - 1
        )
        return info, data_start(block, info.header_offset)

    def _read_by_directory(self, location: MemberLocation, max_bytes: int) -> bytes:
        info, offset = self._directory_entry(location)
        if info.file_size > max_bytes:
            raise MemberTooLarge(f"member of {info.file_size} bytes exceeds the limit of {max_bytes}")
        raw = self._get(location, offset, offset + info.compress_size - 1) if info.compress_size else b""
        return _uncompress(raw, info.compress_type, max_bytes)


def _version(version_id: str | None) -> dict[str, Any]:
    """``VersionId`` for a GET/HEAD when a version is known (an unversioned bucket has none)."""
    return {"VersionId": version_id} if version_id else {}


def _uncompress(raw: bytes, method: int, max_bytes: int) -> bytes:
    if method == STORED:
        return raw
    if method != DEFLATED:
        raise MemberError("unsupported zip compression method")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise MemberError("corrupt deflate data in zip member") from exc
    if len(data) > max_bytes:
        raise MemberTooLarge(f"member inflates beyond the limit of {max_bytes} bytes")
    return data
