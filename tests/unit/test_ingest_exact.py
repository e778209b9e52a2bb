"""Exact counts and first-copy-wins under redelivery, crash-and-retry and concurrent parts (moto)."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from common import keys
from ingest import index_writer
from ingest.index_writer import IndexWriter
from ingest.process import ingest_object
from pydicom.dataset import Dataset

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from, zip_part
from tests.helpers.ingest_support import Atomic


def put_part(
    aws: Aws,
    instances: list[Dataset],
    part_id: str,
    *,
    manifest: bool = False,
    names: list[str] | None = None,
    site: str = "site-a",
) -> str:
    first = instances[0]
    key = keys.incoming_key(first.StudyInstanceUID, first.SeriesInstanceUID, part_id)
    members = {
        (names[i] if names else f"{ds.SOPInstanceUID}.dcm"): encode(ds) for i, ds in enumerate(instances)
    }
    body = None
    if manifest:
        body = json.dumps(
            {
                "gateway_id": site,
                "instances": [
                    {"member": n, "sha256": hashlib.sha256(data).hexdigest()} for n, data in members.items()
                ],
            }
        ).encode()
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=zip_part(members, manifest=body))
    return key


def study_pk(aws: Aws, study_uid: str) -> str:
    """The study's partition: parts with a manifest come from site-a, the others from the default site."""
    for site in ("site-a", "default"):
        pk = keys.study_pk(site, study_uid)
        found = aws.dynamodb.get_item(
            TableName=aws.table, Key={"pk": {"S": pk}, "sk": {"S": keys.STUDY_SK}}, ConsistentRead=True
        )
        if "Item" in found:
            return pk
    raise AssertionError("study not indexed")


def get(aws: Aws, pk: str, sk: str) -> dict[str, Any]:
    raw = aws.dynamodb.get_item(
        TableName=aws.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )
    return {k: next(iter(v.values())) for k, v in raw["Item"].items()}


def study_counts(aws: Aws, study_uid: str) -> tuple[int, int, set[str]]:
    study = get(aws, study_pk(aws, study_uid), keys.STUDY_SK)
    return int(study["series_count"]), int(study["instance_count"]), set(study.get("modalities", []))


def series_count(aws: Aws, study_uid: str, series_uid: str) -> int:
    return int(get(aws, study_pk(aws, study_uid), keys.series_sk(series_uid))["instance_count"])


def instance_items(aws: Aws, study_uid: str) -> list[dict[str, Any]]:
    pages = aws.dynamodb.get_paginator("query").paginate(
        TableName=aws.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": {"S": study_pk(aws, study_uid)}, ":p": {"S": "INSTANCE#"}},
        ConsistentRead=True,
    )
    return [{k: next(iter(v.values())) for k, v in i.items()} for page in pages for i in page["Items"]]


def ingest(aws: Aws, key: str, **kwargs: Any) -> Any:
    return ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key, **kwargs)


def test_moto_reports_cancellation_reasons_per_item(aws: Aws) -> None:
    # GIVEN an item that exists, WHEN a transaction puts it again conditionally next to a fresh one
    item = {"pk": {"S": "STUDY#1"}, "sk": {"S": "X"}}
    aws.dynamodb.put_item(TableName=aws.table, Item=item)
    with pytest.raises(ClientError) as info:
        aws.dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": aws.table,
                        "Item": {**item, "sk": {"S": "Y"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": aws.table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    # THEN the index writer can tell which item failed (it relies on this)
    codes = [r.get("Code") for r in info.value.response["CancellationReasons"]]
    assert codes == ["None", "ConditionalCheckFailed"]


def test_instance_items_say_where_the_member_bytes_are(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 3)
    key = put_part(aws, instances, "p1")
    ingest(aws, key)
    body = aws.s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read()
    items = instance_items(aws, instances[0].StudyInstanceUID)
    assert len(items) == 3
    for it in items:
        # One ranged GET at member_data_offset of member_compressed_size bytes is the instance, verbatim.
        start = int(it["member_data_offset"])
        data = body[start : start + int(it["member_compressed_size"])]
        assert int(it["member_compress_type"]) == 0
        assert int(it["member_size"]) == len(data)
        assert body[int(it["member_offset"]) : int(it["member_offset"]) + 4] == b"PK\x03\x04"
        assert data == encode(next(ds for ds in instances if ds.SOPInstanceUID == it["sop_uid"]))


def test_redelivery_changes_no_count_and_says_redelivered(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 5)
    key = put_part(aws, instances, "p1")
    first = ingest(aws, key)
    for _ in range(2):
        again = ingest(aws, key)
        assert again.indexed == [] and len(again.redelivered) == 5
    assert len(first.indexed) == 5
    assert study_counts(aws, instances[0].StudyInstanceUID) == (1, 5, {"CT"})
    part = get(
        aws, study_pk(aws, instances[0].StudyInstanceUID), keys.part_sk(instances[0].SeriesInstanceUID, "p1")
    )
    assert int(part["deliveries"]) == 3


def test_crash_half_way_then_retry_counts_exactly(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a part of 120 instances (3 instance transactions of at most 48)
    monkeypatch.setattr(index_writer, "INSTANCES_PER_TRANSACTION", 48)
    instances = series_from("CT_small.dcm", 120)
    key = put_part(aws, instances, "p1")
    real = IndexWriter._transact
    calls = {"n": 0}

    def crashing(self: IndexWriter, items: list[dict[str, Any]]) -> set[int]:
        calls["n"] += 1
        if calls["n"] == 3:  # series transaction, first instance batch, then the Lambda dies
            raise RuntimeError("Lambda timed out")
        return real(self, items)

    # WHEN the first attempt crashes after one instance batch was committed
    monkeypatch.setattr(IndexWriter, "_transact", crashing)
    with pytest.raises(RuntimeError):
        ingest(aws, key)
    study_uid = instances[0].StudyInstanceUID
    assert study_counts(aws, study_uid)[:2] == (1, 48)
    # AND the retry runs normally
    monkeypatch.setattr(IndexWriter, "_transact", real)
    retry = ingest(aws, key)
    # THEN every instance is counted once
    assert study_counts(aws, study_uid) == (1, 120, {"CT"})
    assert series_count(aws, study_uid, instances[0].SeriesInstanceUID) == 120
    assert len(retry.indexed) == 72 and len(retry.redelivered) == 48
    assert retry.status == "indexed"


def test_two_parts_of_one_series_ingested_concurrently_count_exactly(aws: Aws) -> None:
    # GIVEN two parts sharing 10 of their instances, plus a second series (MR) in the same study
    instances = series_from("CT_small.dcm", 60)
    other = series_from("MR_small.dcm", 7, study_uid=instances[0].StudyInstanceUID)
    for ds in other:  # one patient per study (a second patient would be a conflict)
        ds.PatientName, ds.PatientID = instances[0].PatientName, instances[0].PatientID
    keys_ = [
        put_part(aws, instances[:35], "p1"),
        put_part(aws, instances[25:], "p2"),
        put_part(aws, other, "p3"),
    ]
    barrier = threading.Barrier(len(keys_))
    reports: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(key: str) -> None:
        barrier.wait()
        try:
            reports[key] = ingest_object(
                Atomic(aws.s3), Atomic(aws.dynamodb), aws.table, aws.bucket, key, concurrency=4
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # WHEN they are ingested at the same time
    threads = [threading.Thread(target=run, args=(k,)) for k in keys_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # THEN each instance is counted once, each series once, modalities exact
    study_uid = instances[0].StudyInstanceUID
    assert study_counts(aws, study_uid) == (2, 67, {"CT", "MR"})
    assert series_count(aws, study_uid, instances[0].SeriesInstanceUID) == 60
    assert series_count(aws, study_uid, other[0].SeriesInstanceUID) == 7
    ct = [reports[keys_[0]], reports[keys_[1]]]
    assert sum(len(r.indexed) for r in ct) == 60
    assert sum(len(r.duplicate) for r in ct) == 10
    assert len(instance_items(aws, study_uid)) == 67


def test_same_uid_with_different_bytes_is_a_new_version_and_the_first_copy_is_kept_in_history(
    aws: Aws,
) -> None:
    # GIVEN a first part, then a second part whose instance 0 has the same UID but other content
    instances = series_from("CT_small.dcm", 3)
    ingest(aws, put_part(aws, instances, "p1", manifest=True))
    changed = series_from("CT_small.dcm", 1)[0]
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "PatientName"):
        setattr(changed, attr, getattr(instances[0], attr))
    changed.file_meta.MediaStorageSOPInstanceUID = instances[0].SOPInstanceUID
    changed.InstanceNumber = 99
    same = instances[1]
    # WHEN it is ingested
    report = ingest(aws, put_part(aws, [changed, same], "p2", manifest=True))
    # THEN the changed copy is an update (latest received wins), the identical one a duplicate
    assert report.fingerprints == "sha256 (manifest)"
    assert report.updated == [instances[0].SOPInstanceUID]
    assert report.conflict == []
    assert report.duplicate == [same.SOPInstanceUID]
    assert report.status == "indexed"
    pk = study_pk(aws, changed.StudyInstanceUID)
    current = get(aws, pk, keys.instance_sk(changed.SeriesInstanceUID, changed.SOPInstanceUID))
    assert current["part_id"] == "p2" and "99" in current["json"]
    previous = get(aws, pk, keys.version_sk(changed.SeriesInstanceUID, changed.SOPInstanceUID, "p1"))
    assert previous["part_id"] == "p1" and previous["replaced_by"] == "p2"
    assert study_counts(aws, changed.StudyInstanceUID)[1] == 3
    assert series_count(aws, changed.StudyInstanceUID, changed.SeriesInstanceUID) == 3
    stored = json.loads(
        aws.s3.get_object(
            Bucket=aws.bucket, Key=keys.report_key(changed.StudyInstanceUID, changed.SeriesInstanceUID, "p2")
        )["Body"].read()
    )
    assert stored["updated"] == [changed.SOPInstanceUID] and stored["summary"]["updated"] == 1
    # AND redelivering either part changes nothing
    again = ingest(aws, put_part(aws, [changed, same], "p2", manifest=True))
    assert again.redelivered == [changed.SOPInstanceUID] and again.updated == []
    assert study_counts(aws, changed.StudyInstanceUID)[1] == 3


def test_same_uid_twice_inside_one_part_keeps_the_first_member(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 2)
    twin = series_from("CT_small.dcm", 1)[0]
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(twin, attr, getattr(instances[0], attr))
    twin.InstanceNumber = 42
    key = put_part(
        aws, [*instances, instances[0], twin], "p1", names=["a.dcm", "b.dcm", "a-copy.dcm", "a-other.dcm"]
    )
    report = ingest(aws, key)
    assert sorted(report.indexed) == sorted(ds.SOPInstanceUID for ds in instances)
    assert report.duplicate == [instances[0].SOPInstanceUID]
    assert report.conflict[0]["kept_member"] == "a.dcm" and report.conflict[0]["member"] == "a-other.dcm"
    assert study_counts(aws, instances[0].StudyInstanceUID)[1] == 2


def test_crc_fingerprint_is_used_when_there_is_no_manifest(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 2)
    ingest(aws, put_part(aws, instances, "p1"))
    # The same bytes again, this time with a manifest: still a duplicate (CRC-32 compared across kinds).
    report = ingest(aws, put_part(aws, instances, "p2", manifest=True, site="default"))
    assert sorted(report.duplicate) == sorted(ds.SOPInstanceUID for ds in instances)
    assert report.conflict == []
