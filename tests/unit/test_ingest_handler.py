"""The Lambda entry point: S3 events with URL-encoded keys, test events and keys that are not parts."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import S3Event
from common import keys

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from, zip_part


def s3_event(bucket: str, *object_keys: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}},
            }
            for key in object_keys
        ]
    }


def test_handler_ingests_url_encoded_keys_and_ignores_other_objects(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABLE_NAME", aws.table)
    monkeypatch.setenv("BUCKET_NAME", aws.bucket)
    from ingest import handler

    # In-process moto intercepts botocore only: read through get_object here.
    monkeypatch.setattr(handler, "PRESIGNED_READS", False)
    monkeypatch.setattr(handler, "s3", aws.s3)
    monkeypatch.setattr(handler, "dynamodb", aws.dynamodb)
    instances = series_from("CT_small.dcm", 2)
    key = keys.incoming_key(instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID, "20261122T1 p+1")
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key=key,
        Body=zip_part({f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances}),
    )
    encoded = key.replace("+", "%2B").replace(" ", "+")
    # WHEN an event names the part (URL-encoded), a key that is not a part, and an object outside incoming/
    result = handler.handle(S3Event(s3_event(aws.bucket, encoded, "incoming/loose.zip", "metadata/x.json")))
    # THEN only the part is ingested
    assert [p["key"] for p in result["parts"]] == [key]
    assert result["parts"][0]["indexed"] == 2
    # AND the s3:TestEvent sent when a notification is configured is ignored
    assert handler.handle(S3Event({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == {"parts": []}
