"""Patients never merge, corrections win, odd UIDs and legacy values stay reachable (issue 13 kinds 2-5)."""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom
import pytest
from common import keys
from ingest.process import ingest_object
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from
from tests.helpers.ingest_support import Atomic
from tests.helpers.part_support import put_site_part
from tests.helpers.query_api import Api, make_api, stow_request

# The odd values below are the point of these tests: pydicom's warnings about them are expected.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR", "ignore:The value length")
SITE = "default"
ADMIN = {"claims": {"sites": SITE}, "scopes": ["dicom/read", "dicom/admin"]}
READER = {"claims": {"sites": SITE}, "scopes": ["dicom/read"]}


def ingest(aws: Aws, key: str) -> Any:
    return ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)


def patient(instances: list[Dataset], name: str, pid: str | None) -> list[Dataset]:
    for ds in instances:
        ds.PatientName = name
        if pid is None:
            ds.pop("PatientID", None)
        else:
            ds.PatientID = pid
    return instances


def counts(aws: Aws, ds: Dataset) -> tuple[int, int]:
    raw = aws.dynamodb.get_item(
        TableName=aws.table,
        Key={"pk": {"S": keys.study_pk(SITE, ds.StudyInstanceUID)}, "sk": {"S": keys.STUDY_SK}},
    )["Item"]
    return int(raw["series_count"]["N"]), int(raw["instance_count"]["N"])


def test_another_patients_instance_is_kept_out_of_the_study_until_an_administrator_accepts_it(
    aws: Aws,
) -> None:
    # GIVEN a study of patient A, then a new instance with its StudyInstanceUID naming patient B
    a = patient(series_from("CT_small.dcm", 3), "Alpha^Ann", "PID-A")
    assert ingest(aws, put_site_part(aws, SITE, a, "p1")).status == "indexed"
    b = patient(series_from("CT_small.dcm", 1, study_uid=a[0].StudyInstanceUID), "Beta^Bob", "PID-B")
    b[0].SeriesInstanceUID = a[0].SeriesInstanceUID
    # WHEN it is ingested
    report = ingest(aws, put_site_part(aws, SITE, b, "p2"))
    # THEN it is not counted into A's study, and the report names the conflict (no PHI)
    assert report.status == "conflict" and report.indexed == []
    assert [(c["kind"], c["sop_instance_uid"]) for c in report.conflict] == [("patient", b[0].SOPInstanceUID)]
    assert report.summary()["patient_conflict"] == 1
    assert "PID-B" not in json.dumps(report.conflict) and "Beta" not in json.dumps(report.conflict)
    assert counts(aws, a[0]) == (1, 3)
    api = make_api(aws)
    study = a[0].StudyInstanceUID
    # QIDO never shows A's identity for B's instance: B's instance is not in A's study at all
    listed = api.get(f"/dicomweb/studies/{study}/instances").json()
    assert b[0].SOPInstanceUID not in json.dumps(listed)
    assert api.get("/dicomweb/studies?PatientID=PID-B").status == 204
    assert api.get("/dicomweb/studies?PatientName=beta*").status == 204
    assert (
        api.get(
            f"/dicomweb/studies/{study}/series/{b[0].SeriesInstanceUID}/instances/{b[0].SOPInstanceUID}"
        ).status
        == 404
    )
    # AND an administrator lists it; a reader may not
    api.claims = READER
    assert api.get("/api/admin/conflicts").status == 403
    api.claims = ADMIN
    listed = api.get("/api/admin/conflicts").json()["conflicts"]
    assert len(listed) == 1
    conflict = listed[0]
    assert conflict["sop_instance_uids"] == [b[0].SOPInstanceUID]
    assert (
        conflict["study_patient"]["PatientID"] == "PID-A"
        and conflict["instance_patient"]["PatientID"] == "PID-B"
    )
    # AND accepting it rewrites the part (a new ObjectCreated), whose ingest indexes it
    reply = api.call(
        "POST", conflict["resolve"], {"content-type": "application/json"}, b'{"action": "accept"}'
    )
    assert reply.status == 200 and reply.json()["status"] == "accepted"
    head = aws.s3.head_object(Bucket=aws.bucket, Key=report.key)
    assert head["Metadata"]["conflict-accepted"] == "true"
    again = ingest(aws, report.key)
    assert again.indexed == [b[0].SOPInstanceUID] and counts(aws, a[0]) == (1, 4)
    assert api.get("/api/admin/conflicts").json()["conflicts"] == []
    assert len(api.get("/api/admin/conflicts?status=accepted").json()["conflicts"]) == 1


def test_a_dismissed_conflict_stays_out(aws: Aws) -> None:
    a = patient(series_from("CT_small.dcm", 2), "Alpha^Ann", "PID-A")
    ingest(aws, put_site_part(aws, SITE, a, "p1"))
    b = patient(series_from("MR_small.dcm", 1, study_uid=a[0].StudyInstanceUID), "Beta^Bob", "PID-B")
    report = ingest(aws, put_site_part(aws, SITE, b, "p2"))
    assert report.status == "conflict"
    # the conflicting part created no series in A's study
    assert counts(aws, a[0]) == (1, 2)
    api = make_api(aws)
    api.claims = ADMIN
    path = f"/api/admin/conflicts/{b[0].StudyInstanceUID}/{b[0].SeriesInstanceUID}/p2"
    assert api.call("POST", path, {}, b'{"action": "merge"}').status == 400
    assert api.call("POST", path, {}, b'{"action": "dismiss"}').json()["status"] == "dismissed"
    assert api.call("POST", path.replace("/p2", "/p9"), {}, b'{"action": "dismiss"}').status == 404
    assert ingest(aws, report.key).status == "conflict"
    assert api.get("/api/admin/conflicts?status=dismissed").json()["conflicts"][0]["status"] == "dismissed"
    # another site's administrator never sees it
    api.claims = {"claims": {"sites": "elsewhere"}, "scopes": ["dicom/admin"]}
    assert api.get("/api/admin/conflicts?status=all").json()["conflicts"] == []


@pytest.mark.parametrize("pid", ["PID-1", None])
def test_a_corrected_patient_name_replaces_the_old_one_everywhere(aws: Aws, pid: str | None) -> None:
    # GIVEN a study indexed with a wrong name (with and without a PatientID)
    wrong = patient(series_from("CT_small.dcm", 3), "Wrong^Walter", pid)
    ingest(aws, put_site_part(aws, SITE, wrong, "p1", received_at=100.0))
    # WHEN the PACS re-sends every instance (same SOP UIDs) with the name fixed
    fixed = patient([copy for copy in (Dataset(ds) for ds in wrong)], "Right^Rita", pid)
    for ds, original in zip(fixed, wrong, strict=True):
        ds.file_meta = original.file_meta
        ds.SeriesDescription = "corrected"
    report = ingest(aws, put_site_part(aws, SITE, fixed, "p2", received_at=200.0))
    # THEN every instance is updated, counts do not move
    assert sorted(report.updated) == sorted(ds.SOPInstanceUID for ds in wrong)
    assert report.conflict == [] and report.indexed == []
    assert counts(aws, wrong[0]) == (1, 3)
    api = make_api(aws)
    study = wrong[0].StudyInstanceUID
    found = api.get("/dicomweb/studies?PatientName=right*")
    assert found.status == 200 and found.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "Right^Rita"
    assert api.get("/dicomweb/studies?PatientName=wrong*").status == 204
    assert api.get("/dicomweb/studies?PatientName=rit&fuzzymatching=true").status == 200
    assert api.get("/dicomweb/studies?PatientName=walt&fuzzymatching=true").status == 204
    summary = api.get(f"/api/studies/{study}").json()
    assert (
        summary["patient_name"] == "Right^Rita" and summary["series"][0]["series_description"] == "corrected"
    )
    metadata = api.get(f"/dicomweb/studies/{study}/metadata").json()
    assert {m["00100010"]["Value"][0]["Alphabetic"] for m in metadata} == {"Right^Rita"}
    # AND each instance lists its history
    sop, series = wrong[0].SOPInstanceUID, wrong[0].SeriesInstanceUID
    history = api.get(f"/api/studies/{study}/series/{series}/instances/{sop}/versions").json()
    assert history["current"]["part_id"] == "p2"
    assert [(v["part_id"], v["replaced_by"]) for v in history["history"]] == [("p1", "p2")]
    # AND redelivering either part is a no-op: an older version only joins the history
    assert len(ingest(aws, report.key).redelivered) == 3
    late = ingest(aws, put_site_part(aws, SITE, wrong, "p0", received_at=50.0))
    assert len(late.superseded) == 3 and late.updated == []
    assert api.get("/dicomweb/studies?PatientName=right*").status == 200
    history = api.get(f"/api/studies/{study}/series/{series}/instances/{sop}/versions").json()
    assert [v["part_id"] for v in history["history"]] == ["p1", "p0"]
    assert counts(aws, wrong[0]) == (1, 3)


def test_leading_zero_uids_are_reachable_and_bad_uids_are_refused(aws: Aws) -> None:
    odd = series_from("CT_small.dcm", 1, study_uid="1.2.826.0.1.3680043.8.498.0100.1")[0]
    odd.SeriesInstanceUID, odd.SOPInstanceUID = (
        "1.2.826.0.1.3680043.8.498.0100.2",
        "1.2.826.0.1.3680043.8.498.0100.3",
    )
    odd.file_meta.MediaStorageSOPInstanceUID = odd.SOPInstanceUID
    bad = series_from("CT_small.dcm", 1, study_uid=odd.StudyInstanceUID)[0]
    bad.SeriesInstanceUID = odd.SeriesInstanceUID
    bad.SOPInstanceUID = "1.2.3.abc"
    members = {"odd.dcm": encode(odd), "bad.dcm": encode(bad)}
    report = ingest(aws, put_site_part(aws, SITE, [odd], "p1", members=members))
    assert report.indexed == [odd.SOPInstanceUID]
    assert report.rejected == [
        {"member": "bad.dcm", "reason": "SOPInstanceUID: UID is not dot-separated digits (PS3.5 9.1)"}
    ]
    api = make_api(aws)
    study, series, sop = odd.StudyInstanceUID, odd.SeriesInstanceUID, odd.SOPInstanceUID
    for path in (
        f"/dicomweb/studies?StudyInstanceUID={study}",
        f"/dicomweb/studies/{study}/series",
        f"/dicomweb/studies/{study}/series/{series}/instances",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        f"/api/studies/{study}/series/{series}",
        f"/api/studies/{study}/series/{series}/instances/{sop}/versions",
    ):
        assert api.get(path).status == 200, path
    assert api.get("/dicomweb/studies/1.2.x/series").status == 400
    # STOW refuses what the rule refuses, with a reason
    long_uid = "1." + "2" * 64
    stowed = series_from("CT_small.dcm", 1, study_uid=long_uid)[0]
    reply = api.call("POST", "/dicomweb/studies", *stow_request([encode(stowed)]))
    assert reply.status == 409
    failed = reply.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xA901]
    assert failed["00000902"]["Value"] == ["StudyInstanceUID: UID longer than 64 characters"]


def test_legacy_dates_are_matched_normalised_and_kept_raw_in_the_metadata(aws: Aws) -> None:
    ds = series_from("CT_small.dcm", 1)[0]
    ds.StudyDate = "2019.06.20"
    ingest(aws, put_site_part(aws, SITE, [ds], "p1"))
    api = make_api(aws)
    found = api.get("/dicomweb/studies?StudyDate=20190601-20190630")
    assert found.status == 200 and found.json()[0]["00080020"]["Value"] == ["20190620"]
    assert api.get("/dicomweb/studies?StudyDate=20190620").status == 200
    metadata = api.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata").json()
    assert metadata[0]["00080020"]["Value"] == ["2019.06.20"]


def _with_inner_group_2(ds: Dataset) -> bytes:
    """Explicit VR bytes whose data set starts with a stray (0002,0010) naming Implicit VR."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    inner = Dataset()
    inner.add_new(0x00020010, "UI", ImplicitVRLittleEndian)
    for element in pydicom.dcmread(io.BytesIO(encode(ds))):
        inner.add(element)
    write_dataset(fp, inner)
    return bytes(fp.getvalue())


def test_the_recorded_transfer_syntax_is_the_file_metas_or_the_negotiated_one(aws: Aws) -> None:
    ds = series_from("CT_small.dcm", 2)
    assert ds[0].file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    members = {f"{ds[0].SOPInstanceUID}.dcm": _with_inner_group_2(ds[0])}
    ingest(aws, put_site_part(aws, SITE, ds[:1], "p1", members=members))
    ingest(aws, put_site_part(aws, SITE, ds[1:], "p2", transfer_syntax="1.2.840.10008.1.2.1.99"))

    def recorded(x: Dataset) -> str:
        raw = aws.dynamodb.get_item(
            TableName=aws.table,
            Key={
                "pk": {"S": keys.study_pk(SITE, x.StudyInstanceUID)},
                "sk": {"S": keys.instance_sk(x.SeriesInstanceUID, x.SOPInstanceUID)},
            },
        )["Item"]
        return str(raw["transfer_syntax"]["S"])

    assert recorded(ds[0]) == ExplicitVRLittleEndian
    assert recorded(ds[1]) == "1.2.840.10008.1.2.1.99"
    api: Api = make_api(aws)
    reply = api.get(
        f"/dicomweb/studies/{ds[0].StudyInstanceUID}/series/{ds[0].SeriesInstanceUID}/instances/{ds[0].SOPInstanceUID}"
    )
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in reply.body.decode("latin-1")


def test_two_patients_in_one_new_part_the_first_sets_the_study_patient(aws: Aws) -> None:
    instances = series_from("CT_small.dcm", 3)
    patient(instances[:2], "Alpha^Ann", "PID-A")
    patient(instances[2:], "Beta^Bob", "PID-B")
    report = ingest(aws, put_site_part(aws, SITE, instances, "p1"))
    assert sorted(report.indexed) == sorted(ds.SOPInstanceUID for ds in instances[:2])
    assert [c["sop_instance_uid"] for c in report.conflict] == [instances[2].SOPInstanceUID]
    assert report.status == "partial" and counts(aws, instances[0]) == (1, 2)
    api = make_api(aws)
    assert api.get("/dicomweb/studies?PatientID=PID-B").status == 204
    [study] = api.get("/dicomweb/studies?PatientID=PID-A").json()
    assert study["00201208"]["Value"] == [2]


def test_concurrent_new_versions_leave_one_current_and_the_rest_in_history(aws: Aws) -> None:
    import threading

    original = patient(series_from("CT_small.dcm", 1), "Same^Sam", "PID-S")
    ingest(aws, put_site_part(aws, SITE, original, "p0", received_at=10.0))
    keys_ = []
    for n in range(1, 4):
        version = Dataset(original[0])
        version.file_meta = original[0].file_meta
        version.InstanceNumber = 100 + n
        keys_.append(put_site_part(aws, SITE, [version], f"p{n}", received_at=10.0 + n))
    barrier = threading.Barrier(len(keys_))
    reports: list[Any] = []

    def run(key: str) -> None:
        barrier.wait()
        reports.append(ingest_object(Atomic(aws.s3), Atomic(aws.dynamodb), aws.table, aws.bucket, key))

    threads = [threading.Thread(target=run, args=(k,)) for k in keys_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reports) == 3 and counts(aws, original[0]) == (1, 1)
    api = make_api(aws)
    ds = original[0]
    history = api.get(
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/versions"
    ).json()
    # Latest received wins whatever the order of ingest; every other version is in the history.
    assert history["current"]["part_id"] == "p3"
    assert sorted(v["part_id"] for v in history["history"]) == ["p0", "p1", "p2"]
