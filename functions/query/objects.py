"""Reads from the bucket for WADO-RS: one instance's bytes out of its part zip, the stored DICOM JSON.

An instance's bytes are one member of ``incoming/<study>/<series>/<part>.zip``.
When the index item carries the member's position (``member_offset`` of its
local file header, ``member_compressed_size``, ``member_size``,
``member_compress_type``: 0 stored, 8 deflate) the member is fetched with ONE
ranged GET of its local header and data. Without them the zip's central
directory is read with ranged reads (``zipfile`` over a ranged reader).
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError
from common.dicom_json import DicomJson

from query.errors import NotFound, StoreError
from query.store import Item

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
LOCAL_SIGNATURE = b"PK\x03\x04"
# Room for the local header's extra field (zip64 sizes, timestamps) fetched in the same GET.
EXTRA_ALLOWANCE = 128
STORED, DEFLATED = 0, 8
UPLOAD_PART = 8 * 1024 * 1024


class Objects:
    def __init__(self, s3: Callable[[], S3Client], bucket: str) -> None:
        """``s3`` makes the client on first use: searches never pay for it at cold start."""
        self._factory = s3
        self._client: S3Client | None = None
        self._bucket = bucket
        self.requests = 0

    @property
    def _s3(self) -> S3Client:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def _get(self, key: str, byte_range: str | None = None) -> bytes:
        try:
            if byte_range:
                response = self._s3.get_object(Bucket=self._bucket, Key=key, Range=byte_range)
            else:
                response = self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound("stored object not found") from exc
            raise StoreError(f"get_object failed: {code}") from exc
        self.requests += 1
        return response["Body"].read()

    def metadata(self, metadata_key: str) -> list[DicomJson]:
        """The DICOM JSON headers of one part (a JSON array), as ingest stored them."""
        return cast(list[DicomJson], json.loads(self._get(metadata_key)))

    def instance_bytes(self, instance: Item) -> bytes:
        """The Part 10 bytes of one indexed instance."""
        key = str(instance["object_key"])
        if "member_offset" in instance and "member_compressed_size" in instance:
            data = self._member_by_offset(key, instance)
            if data is not None:
                return data
        return self._member_by_directory(key, str(instance["member"]))

    def _member_by_offset(self, key: str, instance: Item) -> bytes | None:
        offset = int(instance["member_offset"])
        compressed = int(instance["member_compressed_size"])
        name_length = len(str(instance.get("member", "")).encode())
        end = offset + LOCAL_HEADER.size + name_length + EXTRA_ALLOWANCE + compressed - 1
        block = self._get(key, f"bytes={offset}-{end}")
        if len(block) < LOCAL_HEADER.size or block[:4] != LOCAL_SIGNATURE:
            return None
        fields = LOCAL_HEADER.unpack_from(block)
        start = LOCAL_HEADER.size + fields[9] + fields[10]
        raw = block[start : start + compressed]
        if len(raw) < compressed:  # a larger extra field than allowed for: fetch the rest
            rest = self._get(key, f"bytes={offset + len(block)}-{offset + start + compressed - 1}")
            raw = (block + rest)[start : start + compressed]
        method = int(instance.get("member_compress_type", fields[3]))
        if method == STORED:
            return raw
        if method == DEFLATED:
            return zlib.decompress(raw, -zlib.MAX_WBITS)
        return None

    def _member_by_directory(self, key: str, member: str) -> bytes:
        from ingest.s3_reader import S3RangeReader

        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            raise NotFound("stored object not found") from exc
        reader = S3RangeReader(self._s3, self._bucket, key, head["ContentLength"])
        with zipfile.ZipFile(cast(IO[bytes], reader)) as zf:
            data = zf.read(member)
        self.requests += reader.requests + 1
        return data

    def presigned_get(self, key: str, expires: int, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        try:
            self._s3.put_object(
                Bucket=self._bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata
            )
        except ClientError as exc:
            raise StoreError("put_object failed") from exc

    def rewrite(self, key: str, extra_metadata: dict[str, str]) -> None:
        """Copy an object onto itself with more metadata: a new ObjectCreated event, so ingest runs again."""
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
            self._s3.copy_object(
                Bucket=self._bucket,
                Key=key,
                CopySource={"Bucket": self._bucket, "Key": key},
                Metadata={**head.get("Metadata", {}), **extra_metadata},
                MetadataDirective="REPLACE",
                ContentType=head.get("ContentType", "application/zip"),
            )
        except ClientError as exc:
            raise StoreError("copy_object failed") from exc

    def put_stream(self, key: str, chunks: Iterator[bytes], content_type: str) -> None:
        """Write a large answer with a multipart upload, 8 MB at a time (memory stays bounded)."""
        upload = self._s3.create_multipart_upload(Bucket=self._bucket, Key=key, ContentType=content_type)
        upload_id = upload["UploadId"]
        parts: list[Any] = []
        buffer = bytearray()

        def flush() -> None:
            number = len(parts) + 1
            done = self._s3.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
            )
            parts.append({"PartNumber": number, "ETag": done["ETag"]})
            buffer.clear()

        try:
            for chunk in chunks:
                buffer.extend(chunk)
                if len(buffer) >= UPLOAD_PART:
                    flush()
            if buffer or not parts:
                flush()
            self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
            raise
