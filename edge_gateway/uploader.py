"""Upload outbox parts to S3; an entry leaves the outbox only after S3 confirmed the object.

boto3 sends a SHA-256 checksum that S3 verifies, switches to multipart for large
parts, and encrypts with the configured KMS key. Failures back off exponentially
with full jitter per part; the outbox is on disk, so a restart simply retries.
Object keys and metadata carry UIDs, counts and the gateway id, never PHI.

A part object is only ever created, never overwritten: every PutObject and
CompleteMultipartUpload of a part key carries ``If-None-Match: *`` (S3 conditional
writes). When S3 answers 412 Precondition Failed, the object under the key is
compared with the entry by its ``manifest-sha256`` metadata: the same manifest is
this part, uploaded before (a retry after a lost response or a crash), so the
entry is confirmed; another manifest (another gateway, or a spool restored from
a backup, reusing the part id) is never overwritten: the entry is quarantined
with its reason, shown by ``edge-gateway status``. HeadObject needs ``s3:GetObject``,
which the template's upload-only ``EdgeGatewayPolicy`` does not grant (a gateway
reads no part). Without it the 412 alone confirms the entry: part ids carry 128
random bits chosen by this gateway (``assembler.new_part_id``) and writes are
create-only, so the object can only be this part's own earlier attempt (the usual
cause: a lost response). Quarantining it instead would leave every lost response
to an operator who could not compare either.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from common import keys, part_format

from edge_gateway.packager import OutboxEntry
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import Spool, fsync_dir

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
# The operations that create an object: PutObject, and CompleteMultipartUpload for multipart.
CREATING_OPERATIONS = ("PutObject", "CompleteMultipartUpload")


def create_only(params: dict[str, Any], **_kwargs: Any) -> None:
    """botocore ``before-parameter-build`` hook: a request that writes a part key (``incoming/``)
    creates it or fails with 412, never overwrites it (``If-None-Match: *``)."""
    if str(params.get("Key", "")).startswith(keys.INCOMING_PREFIX):
        params.setdefault("IfNoneMatch", "*")


def install_create_only(s3: S3Client) -> None:
    """Make every write of a part key through ``s3`` conditional (:func:`create_only`); idempotent.

    boto3's transfer manager (multipart, checksums) does not pass ``IfNoneMatch`` through
    ``ExtraArgs``; the client's event hook adds it to the request that creates the object.
    """
    for operation in CREATING_OPERATIONS:
        s3.meta.events.register(
            f"before-parameter-build.s3.{operation}",
            create_only,
            unique_id=f"edge-gateway-create-only-{operation}",
        )


def precondition_failed(exc: BaseException) -> bool:
    """Whether an upload failed because an object already exists under the key (HTTP 412)."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412")
    # boto3's S3UploadFailedError keeps only the message of the ClientError it replaced.
    return "PreconditionFailed" in str(exc) or "(412)" in str(exc)


@dataclass
class _Retry:
    failures: int = 0
    not_before: float = 0.0


@dataclass
class UploadStats:
    """Upload counters for ``edge-gateway status``: times in seconds since the epoch."""

    uploaded_parts: int = 0
    last_upload: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    retrying: dict[str, _Retry] = field(default_factory=dict)


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**failures)]."""
    ceiling = min(cap, base * 2 ** min(failures, 20))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


class Uploader:
    """Ships outbox zips to S3 (multipart above ``multipart_threshold`` bytes, SSE-KMS with ``kms_key_id``).

    Failed uploads are retried with full-jitter exponential backoff (``backoff_base`` and
    ``backoff_cap`` in seconds); a shipped part is recorded in the shipped record.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        spool: Spool,
        shipped: ShippedRecord,
        *,
        kms_key_id: str = "",
        multipart_threshold: int = 64 * 1024**2,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self._backoff = (backoff_base, backoff_cap)
        self._s3 = s3
        self._bucket = bucket
        self._spool = spool
        self._shipped = shipped
        self._kms_key_id = kms_key_id
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=16 * 1024**2
        )
        install_create_only(s3)
        self.stats = UploadStats()

    def due(self, entry: OutboxEntry, now: float) -> bool:
        """Whether ``entry`` may be uploaded at ``now`` (seconds since the epoch): not backing off."""
        retry = self.stats.retrying.get(entry.part_id)
        return retry is None or now >= retry.not_before

    def upload(self, entry: OutboxEntry) -> bool:
        """Try once; True when S3 confirmed the object and the entry left the outbox."""
        d = entry.descriptor
        extra: dict[str, Any] = {
            "ContentType": "application/zip",
            "ChecksumAlgorithm": "SHA256",
            "Metadata": part_format.object_metadata(
                site=str(d["gateway_id"]),
                part_id=entry.part_id,
                study_uid=str(d["study_uid"]),
                series_uid=str(d["series_uid"]),
                instance_count=int(d["instance_count"]),
                manifest_sha=str(d["manifest_sha256"]),
            ),
        }
        if self._kms_key_id:
            extra["ServerSideEncryption"] = "aws:kms"
            extra["SSEKMSKeyId"] = self._kms_key_id
        try:
            self._s3.upload_file(
                str(entry.zip_path),
                self._bucket,
                entry.object_key,
                ExtraArgs=extra,
                Config=self._transfer,
            )
        except Exception as exc:  # botocore/network errors of every kind: retry later
            if precondition_failed(exc):
                return self._already_there(entry, exc)
            self._failed(entry, exc)
            return False
        self._confirmed(entry)
        return True

    def _already_there(self, entry: OutboxEntry, exc: Exception) -> bool:
        """S3 holds an object under the part's key: this part (confirm) or another one (never
        overwritten: the entry is quarantined). True when the entry left the outbox as uploaded."""
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=entry.object_key)
        except ClientError as head_exc:
            code = str(head_exc.response.get("Error", {}).get("Code", ""))
            if code not in ("403", "AccessDenied", "Forbidden"):
                self._failed(entry, head_exc)
                return False
            # No read (EdgeGatewayPolicy): the key's 128 random bits make it this part's own object.
            log.info(
                "part %s already in S3 and not readable by this gateway: its own earlier attempt, confirmed",
                entry.part_id,
            )
            self._confirmed(entry)
            return True
        except BotoCoreError as head_exc:
            self._failed(entry, head_exc)
            return False
        else:
            theirs = head.get("Metadata", {}).get("manifest-sha256", "")
            if theirs and theirs == str(entry.descriptor["manifest_sha256"]):
                log.info("part %s was already in S3 (an earlier attempt stored it): confirmed", entry.part_id)
                self._confirmed(entry)
                return True
            reason = "S3 already holds another part under this part's key: not overwritten"
        self._refused(entry, exc, reason)
        return False

    def _refused(self, entry: OutboxEntry, exc: Exception, reason: str) -> None:
        """Keep an entry S3 refused for good: quarantined with ``reason`` (no UID, no PHI)."""
        self.stats.last_error = f"upload of part {entry.part_id} refused: {reason}"
        self.stats.last_error_at = time.time()
        self.stats.retrying.pop(entry.part_id, None)
        log.error("%s (%s)", self.stats.last_error, type(exc).__name__, extra={"part": entry.part_id})
        # The descriptor first, as the packager does: a zip alone in the outbox is ignored.
        # Gone meanwhile: another coordinator thread dealt with it.
        with contextlib.suppress(FileNotFoundError):
            self._spool.quarantine([entry.zip_path.with_suffix(".json"), entry.zip_path], reason)

    def _failed(self, entry: OutboxEntry, exc: Exception) -> None:
        retry = self.stats.retrying.setdefault(entry.part_id, _Retry())
        retry.failures += 1
        delay = backoff_delay(retry.failures, *self._backoff)
        retry.not_before = time.time() + delay
        self.stats.last_error = f"upload of part {entry.part_id} failed: {type(exc).__name__}"
        self.stats.last_error_at = time.time()
        log.warning("%s; attempt %d, next in %.1f s", self.stats.last_error, retry.failures, delay)

    def _confirmed(self, entry: OutboxEntry) -> None:
        d = entry.descriptor
        hashes = d.get("instance_sha256", {})  # absent in descriptors of older versions
        packaged_at = d.get("packaged_at")
        self._shipped.add(
            str(d["series_uid"]),
            {str(u): hashes.get(str(u)) for u in d["sop_instance_uids"]},
            packaged_at=float(packaged_at) if isinstance(packaged_at, int | float) else None,
            datasets=d.get("instance_dataset_sha256", {}),
        )
        size = entry.zip_path.stat().st_size
        entry.zip_path.unlink()
        entry.zip_path.with_suffix(".json").unlink(missing_ok=True)
        fsync_dir(entry.zip_path.parent)
        self._spool.account(-size)
        self.stats.retrying.pop(entry.part_id, None)
        self.stats.uploaded_parts += 1
        self.stats.last_upload = time.time()
        log.info(
            "part %s uploaded: s3://%s/%s (%d instances)",
            entry.part_id,
            self._bucket,
            entry.object_key,
            d["instance_count"],
        )
