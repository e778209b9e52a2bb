"""Migration: a table and bucket filled by the code before sites were partitions, re-indexed in place."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from common import keys
from ingest.reindex import reindex

from tests.conftest import Aws
from tests.helpers.query_api import make_api

LEGACY = Path(__file__).parent.parent / "data" / "legacy_v1.json"


def load_legacy(aws: Aws) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LEGACY.read_text())
    for item in data["items"]:
        aws.dynamodb.put_item(TableName=aws.table, Item=item)
    for key, body in data["objects"].items():
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=base64.b64decode(body))
    return data


def pks(aws: Aws) -> list[str]:
    return [i["pk"]["S"] for i in aws.dynamodb.scan(TableName=aws.table)["Items"]]


def test_reindex_migrates_a_table_filled_by_the_previous_layout(aws: Aws) -> None:
    # GIVEN the table and bucket as the previous code left them (pk STUDY#<uid>, no sites in keys)
    data = load_legacy(aws)
    assert any(pk.startswith(keys.LEGACY_STUDY_PREFIX) for pk in pks(aws))
    api = make_api(aws)
    # Reads before the migration find nothing of the old layout, and do not fail on its lookups.
    assert api.get("/dicomweb/studies?PatientID=PID-L1").status == 204
    # WHEN the re-index command runs with --drop-legacy, twice
    first = reindex(aws.s3, aws.dynamodb, aws.bucket, aws.table, "incoming/", drop_legacy=True)
    second = reindex(aws.s3, aws.dynamodb, aws.bucket, aws.table, "incoming/", drop_legacy=True)
    # THEN every instance is indexed once under its site, and the old items are gone
    assert first["failed"] == [] and first["indexed"] == 3
    assert first["legacy_items_deleted"] == len(
        [i for i in data["items"] if i["pk"]["S"].startswith("STUDY#")]
    )
    assert second["indexed"] == 0 and second["redelivered"] == 3 and second["legacy_items_deleted"] == 0
    assert not any(pk.startswith(keys.LEGACY_STUDY_PREFIX) for pk in pks(aws))
    api.claims = {"claims": {"sites": "default"}, "scopes": ["dicom/read"]}
    [study] = api.get("/dicomweb/studies?PatientID=PID-L1").json()
    assert study["00201208"]["Value"] == [2] and study["00080020"]["Value"] == ["20200101"]
    assert api.get("/dicomweb/studies?PatientID=PID-N1").status == 204
    api.claims = {"claims": {"sites": "north"}, "scopes": ["dicom/read"]}
    [north] = api.get("/dicomweb/studies?PatientName=north*").json()
    assert north["00201208"]["Value"] == [1]
    uid = north["0020000D"]["Value"][0]
    assert api.get(f"/dicomweb/studies/{uid}/metadata").status == 200
