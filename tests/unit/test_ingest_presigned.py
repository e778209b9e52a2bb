"""Presigned ranged reads (what the Lambda uses) against a moto server on loopback."""

from __future__ import annotations

import boto3
import pytest
from common import keys
from common.s3_reader import PresignedRangeFetcher, S3ReadError
from ingest.process import ingest_object

from local_cloud.template import load_template, table_definition
from tests.conftest import BUCKET, REGION, TABLE
from tests.helpers.dicom_factory import encode, series_from, zip_part


def test_presigned_reads_index_a_part_with_one_request_per_member(endpoint: str) -> None:
    # GIVEN a bucket and table on a moto server, and a 3-instance part
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    dynamodb.create_table(**table_definition(load_template(), TABLE))
    instances = series_from("CT_small.dcm", 6)
    key = keys.incoming_key(instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID, "p1")
    body = zip_part({f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances})
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    # WHEN it is ingested through presigned ranged GETs
    report = ingest_object(s3, dynamodb, TABLE, BUCKET, key, presigned_reads=True)
    # THEN every instance is indexed: one GET for the tail (directory and the last members),
    # one per member before it, and never more bytes than the object
    assert sorted(report.indexed) == sorted(ds.SOPInstanceUID for ds in instances)
    assert 2 <= report.requests <= 1 + 6
    assert report.bytes_fetched <= len(body)
    # AND a part smaller than the tail read costs one request
    [single] = series_from("CT_small.dcm", 1)
    small_key = keys.incoming_key(single.StudyInstanceUID, single.SeriesInstanceUID, "p1")
    s3.put_object(Bucket=BUCKET, Key=small_key, Body=zip_part({"a.dcm": encode(single)}))
    small = ingest_object(s3, dynamodb, TABLE, BUCKET, small_key, presigned_reads=True)
    assert small.indexed == [single.SOPInstanceUID]
    assert small.requests == 1


def test_a_failed_ranged_get_raises_instead_of_reading_something_else(endpoint: str) -> None:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    fetch = PresignedRangeFetcher(s3, BUCKET, "incoming/missing.zip", None, pool_size=2)
    with pytest.raises(S3ReadError, match="HTTP 404"):
        fetch(0, 99)
