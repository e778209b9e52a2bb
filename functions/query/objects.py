"""Reads from and writes to the bucket for the query routes: stored DICOM JSON, instance bytes, caches.

Instance bytes are members of ``incoming/<study>/<series>/<part>.zip``, read through
the one zip member reader (:mod:`common.zip_members`): one ranged GET when the index
item records the member's position, the zip's central directory otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError
from common.dicom_json import DicomJson
from common.zip_members import (
    DEFAULT_MAX_MEMBER_BYTES,
    MemberError,
    MemberLocation,
    MemberReader,
    MemberTooLarge,
    ObjectMissing,
)

from query.errors import NotFound, StoreError
from query.store import Item

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

UPLOAD_PART = 8 * 1024 * 1024


class Objects:
    """The bucket as the query function sees it; ``members`` reads zip members (requests counted)."""

    def __init__(self, s3: Callable[[], S3Client], bucket: str) -> None:
        """``s3`` makes the client on first use: searches never pay for it at cold start."""
        self.members = MemberReader(s3, bucket)
        self._bucket = bucket

    def use(self, s3: S3Client, bucket: str) -> None:
        """Point at another client and bucket (tests inject their moto here)."""
        self.members = MemberReader(lambda: s3, bucket)
        self._bucket = bucket

    @property
    def _s3(self) -> S3Client:
        return self.members.s3

    @property
    def requests(self) -> int:
        """GET/HEAD requests made so far (benchmarks and tests)."""
        return self.members.requests

    def get(self, key: str) -> bytes | None:
        """A whole (small) object, or None when it is not there."""
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StoreError(f"get_object failed: {code}") from exc
        data = response["Body"].read()
        self.members.requests += 1
        self.members.bytes_fetched += len(data)
        return data

    def metadata(self, metadata_key: str) -> list[DicomJson]:
        """The DICOM JSON headers of one part (a JSON array), as ingest stored them."""
        data = self.get(metadata_key)
        if data is None:
            raise NotFound("stored object not found")
        return cast(list[DicomJson], json.loads(data))

    def instance_bytes(self, instance: Item, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
        """The Part 10 bytes of one indexed instance.

        Raises NotFound when the part is gone, MemberTooLarge above ``max_bytes``,
        StoreError when the member cannot be read.
        """
        try:
            return self.members.read(MemberLocation.of_item(instance), max_bytes)
        except ObjectMissing as exc:
            raise NotFound("stored object not found") from exc
        except MemberTooLarge:
            raise
        except MemberError as exc:
            raise StoreError(str(exc)) from exc

    def presigned_get(
        self, key: str, expires: int, filename: str | None = None, version_id: str | None = None
    ) -> str:
        """A presigned GetObject URL valid ``expires`` seconds; ``filename`` names the download,
        ``version_id`` pins the object version (the one ingest indexed)."""
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        """Store ``body`` under ``key``; raises StoreError when PutObject fails."""
        try:
            self._s3.put_object(
                Bucket=self._bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata or {}
            )
        except ClientError as exc:
            raise StoreError("put_object failed") from exc

    def create(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> bool:
        """Store ``body`` under ``key`` only if no object is there (``If-None-Match: *``).

        Returns False when an object already exists (HTTP 412): nothing was overwritten.
        Raises StoreError when PutObject fails otherwise.
        """
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata,
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise StoreError("put_object failed") from exc
        return True

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
