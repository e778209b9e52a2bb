"""The query API in process: QIDO-RS, WADO-RS, STOW-RS, JSON answers, errors, access, no Scan."""

from __future__ import annotations

import pytest
from ingest.process import ingest_object

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from
from tests.helpers.query_api import Api, index_two_patients, make_api, stow_request


@pytest.fixture
def api(aws: Aws) -> Api:
    ct, mr = index_two_patients(aws, ct_instances=3)
    client = make_api(aws)
    client.ct, client.mr = ct, mr  # type: ignore[attr-defined]
    return client


def test_stow_writes_one_part_per_series(api: Api) -> None:
    new = series_from("CT_small.dcm", 2)
    duplicate = api.ct[0]  # type: ignore[attr-defined]
    headers, body = stow_request([*map(encode, new), encode(duplicate), b"not dicom"], boundary="XyZ")
    reply = api.call("POST", "/dicomweb/studies", headers, body)
    assert reply.status == 202
    answer = reply.json()
    assert len(answer["00081199"]["Value"]) == 2
    reasons = sorted(f["00081197"]["Value"][0] for f in answer["00081198"]["Value"])
    assert reasons == [0x0111, 0xC000]
    listed = api.aws.s3.list_objects_v2(Bucket=api.aws.bucket, Prefix=f"incoming/{new[0].StudyInstanceUID}/")
    [obj] = listed["Contents"]
    # AND ingest indexes it like a gateway part
    ingest_object(api.aws.s3, api.aws.dynamodb, api.aws.table, api.aws.bucket, obj["Key"])
    assert api.get(f"/dicomweb/studies/{new[0].StudyInstanceUID}/instances").status == 200
    bad = api.call("POST", "/dicomweb/studies", {"content-type": "application/json"}, b"{}")
    assert bad.status == 415


def test_every_route_reads_by_key_never_scan(api: Api) -> None:
    ct = api.ct  # type: ignore[attr-defined]
    study, series, sop = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID, ct[0].SOPInstanceUID
    operations: list[str] = []
    api.aws.dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: operations.append(model.name)
    )
    paths = [
        "/dicomweb/studies",
        "/dicomweb/studies?PatientName=mu&fuzzymatching=true",
        "/dicomweb/studies?StudyDate=20240101-20241231",
        "/dicomweb/studies?AccessionNumber=*",
        "/dicomweb/series?Modality=CT",
        "/dicomweb/series?SeriesNumber=1",
        f"/dicomweb/studies/{study}/series",
        f"/dicomweb/studies/{study}/instances",
        f"/dicomweb/studies/{study}/series/{series}/instances",
        f"/dicomweb/studies/{study}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        f"/dicomweb/studies/{study}",
        f"/api/studies/{study}",
        f"/api/studies/{study}/series/{series}",
        f"/api/studies/{study}/series/{series}/download",
        f"/api/studies/{study}/series/{series}/instances/{sop}/attributes/PatientID",
        "/api/patients?name=doe",
        "/api/patients?id=PID-1",
    ]
    for path in paths:
        assert api.get(path).status == 200, path
    assert set(operations) <= {"Query", "GetItem", "BatchGetItem"}
    assert "Query" in operations


def test_answers_above_the_lambda_limit_go_through_a_presigned_link(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a response limit smaller than the series
    from query.routes import wado

    monkeypatch.setattr(wado, "INLINE_LIMIT", 1000)
    ct = api.ct  # type: ignore[attr-defined]
    # WHEN the series is retrieved
    reply = api.get(f"/dicomweb/studies/{ct[0].StudyInstanceUID}/series/{ct[0].SeriesInstanceUID}")
    # THEN the answer is a 303 to a time-limited link holding the same multipart body
    assert reply.status == 303
    assert "Expires=" in reply.headers["location"] or "X-Amz-Expires=" in reply.headers["location"]
    [stored] = api.aws.s3.list_objects_v2(Bucket=api.aws.bucket, Prefix="retrieve/")["Contents"]
    obj = api.aws.s3.get_object(Bucket=api.aws.bucket, Key=stored["Key"])
    assert obj["ContentType"].startswith('multipart/related; type="application/dicom"')
    body = obj["Body"].read()
    assert all(ds.SOPInstanceUID.encode() in body for ds in ct)
