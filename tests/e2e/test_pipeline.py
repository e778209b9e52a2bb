"""End to end on the local stand-in: C-STORE over a real association -> S3 zip -> index -> HTTP API."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dicom_factory import pydicom_dataset, series_from
from tests.helpers.pipeline import (
    PATIENT_NAME,
    SERIES_RELATED_INSTANCES,
    STUDY_RELATED_SERIES,
    send,
    study_when_complete,
    value,
)

pytestmark = pytest.mark.e2e


def test_instances_sent_by_dicom_are_searchable_over_http(stack: Stack) -> None:
    # GIVEN pydicom's CT and MR test files and a 5-instance CT series built from them
    ct, mr = pydicom_dataset("CT_small.dcm"), pydicom_dataset("MR_small.dcm")
    series = series_from("CT_small.dcm", 5)
    for ds in series:
        ds.PatientName = "Multi^Series"

    # WHEN they are sent over one real association
    assert send(stack.dicom_port, [ct, mr, *series]) == [0] * 7

    # THEN QIDO-RS finds each study with its exact patient name and instance counts
    for ds, count in ((ct, 1), (mr, 1), (series[0], 5)):
        study = study_when_complete(stack, ds.StudyInstanceUID, count)
        assert value(study, PATIENT_NAME) == {"Alphabetic": str(ds.PatientName)}
        assert value(study, STUDY_RELATED_SERIES) == 1
        assert value(study, "0020000D") == ds.StudyInstanceUID

    status, headers, found = stack.get(f"/dicomweb/studies/{series[0].StudyInstanceUID}/series")
    assert status == 200
    assert headers["content-type"] == "application/dicom+json"
    assert [value(s, "0020000E") for s in found] == [series[0].SeriesInstanceUID]
    assert value(found[0], SERIES_RELATED_INSTANCES) == 5

    status, _, instances = stack.get(
        f"/dicomweb/studies/{series[0].StudyInstanceUID}/series/{series[0].SeriesInstanceUID}/instances"
    )
    assert status == 200
    assert sorted(value(i, "00080018") for i in instances) == sorted(ds.SOPInstanceUID for ds in series)

    status, _, by_name = stack.get("/dicomweb/studies?PatientName=multi&fuzzymatching=true")
    assert [value(s, "0020000D") for s in by_name] == [series[0].StudyInstanceUID]

    # AND the JSON series summary and the bucket agree
    status, _, summary = stack.get(
        f"/api/studies/{series[0].StudyInstanceUID}/series/{series[0].SeriesInstanceUID}"
    )
    assert status == 200
    assert summary["instance_count"] == 5
    assert summary["patient_name"] == "Multi^Series"
    assert summary["ingest_status"] == "indexed"
    [part] = summary["parts"]
    key = f"incoming/{series[0].StudyInstanceUID}/{series[0].SeriesInstanceUID}/{part['part_id']}.zip"
    assert part["object"] == f"s3://{stack.bucket}/{key}"
    head = stack.s3().head_object(Bucket=stack.bucket, Key=key)
    assert head["Metadata"]["instance-count"] == "5"


def test_the_same_object_delivered_twice_leaves_counts_unchanged(stack: Stack) -> None:
    series = series_from("MR_small.dcm", 3)
    assert send(stack.dicom_port, series) == [0] * 3
    study_uid, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    study_when_complete(stack, study_uid, 3)
    s3 = stack.s3()
    [obj] = s3.list_objects_v2(Bucket=stack.bucket, Prefix=f"incoming/{study_uid}/")["Contents"]
    report_key = obj["Key"].replace("incoming/", "reports/", 1).removesuffix(".zip") + ".json"

    # WHEN the same object is written again (S3 sends a second ObjectCreated event)
    s3.copy_object(
        Bucket=stack.bucket,
        Key=obj["Key"],
        CopySource={"Bucket": stack.bucket, "Key": obj["Key"]},
        MetadataDirective="REPLACE",
        Metadata={"redelivery": "1"},
    )

    # THEN the second ingest finds every instance already indexed, and nothing is counted twice
    def redelivered() -> bool:
        report = json.loads(s3.get_object(Bucket=stack.bucket, Key=report_key)["Body"].read())
        return len(report["redelivered"]) == 3

    wait_for(redelivered, 60, "the redelivery to be ingested")
    status, _, summary = stack.get(f"/api/studies/{study_uid}/series/{series_uid}")
    assert status == 200
    assert summary["instance_count"] == 3
    study = study_when_complete(stack, study_uid, 3)
    assert value(study, STUDY_RELATED_SERIES) == 1


def test_unknown_uids_get_404_with_a_json_error(stack: Stack) -> None:
    status, headers, body = stack.get("/dicomweb/studies/1.2.3.999/series")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert body["error"] == "study not found"
    status, _, body = stack.get("/dicomweb/studies/not-a-uid/series")
    assert status == 400
    assert "malformed" in body["error"]
