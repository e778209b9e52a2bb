"""What S3 receives: multipart for large parts, SHA-256 checksum, SSE-KMS, metadata with UIDs only."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from tests.conftest import REGION, Aws
from tests.e2e.conftest import wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
    GatewayFactory,
    bucket_members,
    send_files,
    start_gateway_fixture,
    write_files,
)

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000


def test_large_part_is_a_checksummed_kms_encrypted_multipart_upload_without_phi(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a KMS key, a gateway that uploads parts above 5 MB in multipart, and a 6 MB series
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    gateway = start_gateway(multipart_threshold=5 * 1024**2, kms_key_id=key_id, gateway_id="site-a-edge-1")
    instances = series_from("CT_small.dcm", 12)
    for ds in instances:
        ds.Rows = ds.Columns = 512
        ds.PixelData = os.urandom(512 * 512 * 2)
        ds.PatientName, ds.PatientID = "Secret^Person", "PHI-ID-99"
    files = write_files(tmp_path / "ct", instances)

    # WHEN it is sent and shipped
    assert send_files(gateway.port, files).statuses == [SUCCESS] * 12
    found = wait_for(lambda: bucket_members(aws.s3, aws.bucket) or None, 30, "the part in the bucket")

    # THEN the object is one multipart upload, SHA-256 checksummed, SSE-KMS with our key
    [key] = found
    head = aws.s3.head_object(Bucket=aws.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-1")  # a multipart ETag: <md5 of part md5s>-<parts>
    assert head.get("ChecksumSHA256")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    # AND its key and metadata carry UIDs, counts and the gateway id, never the patient
    study, series = instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID
    assert key.startswith(f"incoming/{study}/{series}/")
    metadata = head["Metadata"]
    assert metadata["study-uid"] == study and metadata["series-uid"] == series
    assert metadata["instance-count"] == "12" and metadata["gateway-id"] == "site-a-edge-1"
    assert not any("Secret" in v or "PHI-ID" in v for v in [key, *metadata.values()])
