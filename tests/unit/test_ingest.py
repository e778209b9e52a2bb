"""Ingest against an in-process moto: exact counts, idempotent redelivery, rejections with reasons."""

from __future__ import annotations

import json
from typing import Any

from common import keys
from ingest.process import ingest_object
from pydicom.dataset import Dataset

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from
from tests.helpers.part_support import put_part


def item(aws: Aws, pk: str, sk: str) -> dict[str, Any]:
    raw = aws.dynamodb.get_item(TableName=aws.table, Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"]
    return {k: next(iter(v.values())) for k, v in raw.items()}


def counts(aws: Aws, ds: Dataset) -> tuple[int, int, int]:
    study = item(aws, keys.study_pk("default", ds.StudyInstanceUID), keys.STUDY_SK)
    series = item(aws, keys.study_pk("default", ds.StudyInstanceUID), keys.series_sk(ds.SeriesInstanceUID))
    return int(study["series_count"]), int(study["instance_count"]), int(series["instance_count"])


def test_a_part_is_indexed_with_exact_counts(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 3)
    key = put_part(aws, instances, "p1")
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)
    assert report.status == "indexed"
    assert sorted(report.indexed) == sorted(ds.SOPInstanceUID for ds in instances)
    assert counts(aws, instances[0]) == (1, 3, 3)


def test_the_same_object_delivered_twice_changes_nothing(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 3)
    key = put_part(aws, instances, "p1")
    ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)
    again = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)
    assert again.indexed == []
    assert len(again.redelivered) == 3
    assert counts(aws, instances[0]) == (1, 3, 3)


def test_a_second_part_of_the_series_adds_only_new_instances(aws: Aws) -> None:
    instances = series_from("MR_small.dcm", 4)
    ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_part(aws, instances[:3], "p1"))
    second = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_part(aws, instances[2:], "p2"))
    assert second.indexed == [instances[3].SOPInstanceUID]
    assert second.duplicate == [instances[2].SOPInstanceUID]
    assert counts(aws, instances[0]) == (1, 4, 4)
    series = item(
        aws,
        keys.study_pk("default", instances[0].StudyInstanceUID),
        keys.series_sk(instances[0].SeriesInstanceUID),
    )
    assert set(series["parts"]) == {"p1", "p2"}


def test_bad_members_are_rejected_with_reasons_and_the_rest_is_indexed(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 2)
    no_uid = series_from("CT_small.dcm", 1, study_uid=instances[0].StudyInstanceUID)[0]
    del no_uid.SOPInstanceUID
    extra = {"notes.dcm": b"not dicom at all" * 20, "broken.dcm": encode(no_uid), "../escape.dcm": b"x"}
    key = put_part(aws, instances, "p1", extra)
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)
    reasons = {r["member"]: r["reason"] for r in report.rejected}
    assert report.status == "partial"
    assert set(reasons) == {"notes.dcm", "broken.dcm", "../escape.dcm"}
    assert "missing SOPInstanceUID" in reasons["broken.dcm"]
    assert "unsafe member name" in reasons["../escape.dcm"]
    assert len(report.indexed) == 2
    assert counts(aws, instances[0]) == (1, 2, 2)


def test_an_object_that_is_not_a_zip_is_rejected_and_reported(aws: Aws) -> None:
    key = keys.incoming_key("1.2.3", "1.2.3.4", "p1")
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"GIF89a not a zip")
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)
    assert report.status == "rejected"
    assert "not a zip" in report.reason
    stored = json.loads(
        aws.s3.get_object(Bucket=aws.bucket, Key=keys.report_key("1.2.3", "1.2.3.4", "p1"))["Body"].read()
    )
    assert stored["status"] == "rejected"
    tags = aws.s3.get_object_tagging(Bucket=aws.bucket, Key=key)["TagSet"]
    assert {"Key": "ingest-status", "Value": "rejected"} in tags


def test_headers_are_read_with_ranged_requests_not_whole_objects(aws: Aws) -> None:
    # 20 CT instances of ~40 KB: a block-cached ranged reader must not fetch the object twice over.
    instances = series_from("CT_small.dcm", 20)
    key = put_part(aws, instances, "p1")
    size = aws.s3.head_object(Bucket=aws.bucket, Key=key)["ContentLength"]
    report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)
    assert len(report.indexed) == 20
    assert report.bytes_fetched <= size
