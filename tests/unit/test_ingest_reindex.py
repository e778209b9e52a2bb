"""The re-index command: replays ingest over a prefix, with a progress bar, safe to run twice."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from common import keys
from ingest.reindex import main, reindex
from pydicom.dataset import Dataset

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from, zip_part


def put_part(aws: Aws, instances: list[Dataset], part_id: str) -> str:
    first = instances[0]
    key = keys.incoming_key(first.StudyInstanceUID, first.SeriesInstanceUID, part_id)
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key=key,
        Body=zip_part({f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in instances}),
    )
    return key


def get(aws: Aws, pk: str, sk: str) -> dict[str, Any]:
    raw = aws.dynamodb.get_item(TableName=aws.table, Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"]
    return {k: next(iter(v.values())) for k, v in raw.items()}


def study_counts(aws: Aws, ds: Dataset) -> tuple[int, int]:
    study = get(aws, keys.study_pk("default", ds.StudyInstanceUID), keys.STUDY_SK)
    return int(study["series_count"]), int(study["instance_count"])


def test_reindex_twice_counts_once_and_shows_progress(aws: Aws) -> None:
    # GIVEN two series of one study, a broken part and an object that is not a part, under incoming/
    ct = series_from("CT_small.dcm", 4)
    mr = series_from("MR_small.dcm", 3, study_uid=ct[0].StudyInstanceUID)
    for ds in mr:  # one patient per study (a second patient would be a conflict)
        ds.PatientName, ds.PatientID = ct[0].PatientName, ct[0].PatientID
    put_part(aws, ct, "p1")
    put_part(aws, mr, "p1")
    aws.s3.put_object(Bucket=aws.bucket, Key=keys.incoming_key("9.9", "9.9.9", "bad"), Body=b"not a zip")
    aws.s3.put_object(Bucket=aws.bucket, Key="incoming/readme.txt", Body=b"x")
    # WHEN re-index runs twice over the prefix
    first_bar, second_bar = io.StringIO(), io.StringIO()
    first = reindex(aws.s3, aws.dynamodb, aws.bucket, aws.table, "incoming/", progress=first_bar)
    second = reindex(aws.s3, aws.dynamodb, aws.bucket, aws.table, "incoming/", progress=second_bar)
    # THEN the first indexes everything, the second finds it all already there
    assert first["parts"] == 3 and first["indexed"] == 7 and first["failed"] == []
    assert first["statuses"] == {"indexed": 2, "rejected": 1}
    assert second["indexed"] == 0 and second["redelivered"] == 7
    assert study_counts(aws, ct[0]) == (2, 7)
    lines = first_bar.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("[" + "#" * 30 + "] 3/3 parts")


def test_reindex_refreshes_items_written_by_an_older_version_without_counting(aws: Aws) -> None:
    # GIVEN an indexed part whose instance item lacks an attribute the current version writes
    ct = series_from("CT_small.dcm", 2)
    put_part(aws, ct, "p1")
    reindex(aws.s3, aws.dynamodb, aws.bucket, aws.table, "incoming/")
    key = {
        "pk": {"S": keys.study_pk("default", ct[0].StudyInstanceUID)},
        "sk": {"S": keys.instance_sk(ct[0].SeriesInstanceUID, ct[0].SOPInstanceUID)},
    }
    aws.dynamodb.update_item(
        TableName=aws.table, Key=key, UpdateExpression="REMOVE member_offset, member_size"
    )
    # WHEN re-index runs again
    summary = reindex(aws.s3, aws.dynamodb, aws.bucket, aws.table, f"incoming/{ct[0].StudyInstanceUID}/")
    # THEN the item has the attributes again and nothing was counted twice
    item = aws.dynamodb.get_item(TableName=aws.table, Key=key)["Item"]
    assert "member_offset" in item and "member_size" in item
    assert summary["refreshed"] == 2
    assert study_counts(aws, ct[0]) == (1, 2)


def test_reindex_command_line(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = series_from("CT_small.dcm", 2)
    put_part(aws, ct, "p1")
    monkeypatch.setenv("BUCKET_NAME", aws.bucket)
    monkeypatch.setenv("TABLE_NAME", aws.table)
    assert main(["--prefix", "incoming/"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["indexed"] == 2
    assert "1/1 parts" in out.err
    with pytest.raises(SystemExit):
        main(["--prefix", "metadata/"])  # only incoming/ holds parts
