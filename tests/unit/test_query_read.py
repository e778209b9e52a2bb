"""The query API in process, read-only routes: the data is indexed once per module (module_aws)."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode
from tests.helpers.query_api import SERIES, SOP, STUDY, Api, index_two_patients, make_api, uids


@pytest.fixture(scope="module")
def indexed(module_aws: Aws) -> tuple[list[Dataset], list[Dataset]]:
    return index_two_patients(module_aws, ct_instances=3)


@pytest.fixture
def api(module_aws: Aws, indexed: tuple[list[Dataset], list[Dataset]]) -> Api:
    """A fresh client (no claims) over the module's indexed data."""
    client = make_api(module_aws)
    client.ct, client.mr = indexed  # type: ignore[attr-defined]
    return client


def test_qido_routes_answer_dicom_json(api: Api) -> None:
    ct = api.ct  # type: ignore[attr-defined]
    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    reply = api.get("/dicomweb/series?Modality=CT")
    assert reply.status == 200
    assert uids(reply.json(), SERIES) == [series]
    reply = api.get(f"/dicomweb/studies/{study}/instances")
    assert sorted(uids(reply.json(), SOP)) == sorted(ds.SOPInstanceUID for ds in ct)
    reply = api.get(f"/dicomweb/studies/{study}/series/{series}/instances?InstanceNumber=2")
    assert uids(reply.json(), SOP) == [ct[1].SOPInstanceUID]
    assert uids(api.get("/dicomweb/studies?00100020=PID-1").json(), STUDY) == [study]
    reply = api.get(f"/dicomweb/studies/{study}/instances?SOPInstanceUID={ct[2].SOPInstanceUID}")
    assert uids(reply.json(), SOP) == [ct[2].SOPInstanceUID]


def test_limit_offset_warning_and_no_content(api: Api) -> None:
    study = api.ct[0].StudyInstanceUID  # type: ignore[attr-defined]
    first = api.get(f"/dicomweb/studies/{study}/instances?limit=2")
    assert len(first.json()) == 2
    assert first.headers["warning"].startswith("299")
    rest = api.get(f"/dicomweb/studies/{study}/instances?limit=2&offset=2")
    assert len(rest.json()) == 1
    assert "warning" not in rest.headers
    assert api.get("/dicomweb/studies?PatientID=nobody").status == 204


def test_includefield_reads_the_stored_header(api: Api) -> None:
    ct = api.ct  # type: ignore[attr-defined]
    path = f"/dicomweb/studies/{ct[0].StudyInstanceUID}/instances?includefield=KVP,00280030"
    [result, *_] = api.get(path).json()
    assert "00180060" in result
    assert "00280030" in result
    assert api.get(f"{path.split('?', maxsplit=1)[0]}?includefield=NoSuchKeyword").status == 400


def test_wado_metadata_and_retrieve(api: Api) -> None:
    ct = api.ct  # type: ignore[attr-defined]
    base = f"/dicomweb/studies/{ct[0].StudyInstanceUID}/series/{ct[0].SeriesInstanceUID}"
    metadata = api.get(f"{base}/metadata").json()
    assert sorted(uids(metadata, SOP)) == sorted(ds.SOPInstanceUID for ds in ct)
    single = api.get(f"{base}/instances/{ct[0].SOPInstanceUID}", accept="application/dicom")
    assert single.status == 200
    assert single.headers["content-type"] == "application/dicom"
    assert single.body == encode(ct[0])
    multi = api.get(base, accept='multipart/related; type="application/dicom"')
    assert multi.status == 200
    datasets = [dcmread(io.BytesIO(content)) for _, content in multi.parts()]
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(ds.SOPInstanceUID for ds in ct)
    assert api.get(base, accept="image/png").status == 406


def test_member_fetched_by_offset_in_one_ranged_get(api: Api) -> None:
    # GIVEN an instance item that knows where its member starts (as ingest records it)
    ct = api.ct  # type: ignore[attr-defined]
    from common import keys
    from query.dependencies import objects, store

    item = store.get(
        keys.study_pk("default", ct[0].StudyInstanceUID),
        keys.instance_sk(ct[0].SeriesInstanceUID, ct[0].SOPInstanceUID),
    )
    assert item is not None
    import zipfile

    body = api.aws.s3.get_object(Bucket=api.aws.bucket, Key=item["object_key"])["Body"].read()
    info = zipfile.ZipFile(io.BytesIO(body)).getinfo(item["member"])
    item.update(
        member_offset=info.header_offset,
        member_compressed_size=info.compress_size,
        member_size=info.file_size,
        member_compress_type=info.compress_type,
    )
    before = objects.requests
    # WHEN its bytes are read THEN one GET returns exactly the member
    assert objects.instance_bytes(item) == encode(ct[0])
    assert objects.requests - before == 1


def test_json_answers(api: Api) -> None:
    ct = api.ct  # type: ignore[attr-defined]
    study, series, sop = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID, ct[0].SOPInstanceUID
    patients = api.get("/api/patients?name=mull").json()["patients"]
    assert [p["patient_id"] for p in patients] == ["PID-1"]
    assert api.get("/api/patients?id=PID-2").json()["patients"][0]["patient_name"] == "Doe^Jane"
    found = api.get(f"/api/studies/{study}").json()
    assert [s["series_instance_uid"] for s in found["series"]] == [series]
    for tag in ("0010,0010", "00100010", "PatientName"):
        answer = api.get(f"/api/studies/{study}/series/{series}/instances/{sop}/attributes/{tag}").json()
        assert answer["value"] == [{"Alphabetic": "Müller^Hans"}]
        assert answer["keyword"] == "PatientName"
    assert api.get(f"/api/studies/{study}/series/{series}/instances/{sop}/attributes/zz").status == 400
    links = api.get(f"/api/studies/{study}/series/{series}/download").json()
    assert "Signature=" in links["parts"][0]["url"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/dicomweb/studies/not-a-uid/metadata", 400),
        ("GET", "/dicomweb/studies?StudyDate=2024", 400),
        ("GET", "/dicomweb/studies?StudyDate=2024-01-01", 400),
        ("GET", "/dicomweb/studies?StudyDate=20241345", 400),
        ("GET", "/dicomweb/studies?StudyDate=20240101-20231301", 400),
        ("GET", "/dicomweb/studies?StudyTime=2500", 400),
        ("GET", "/dicomweb/studies/1.2.3/series?SeriesDate=20240230", 400),
        ("GET", "/dicomweb/studies?limit=0", 400),
        ("GET", "/dicomweb/studies?limit=100000", 400),
        ("GET", "/dicomweb/studies?Bogus=1", 400),
        ("GET", "/dicomweb/nowhere", 404),
        ("DELETE", "/dicomweb/studies", 405),
        ("GET", "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5", 404),
    ],
)
def test_bad_input_is_a_json_4xx(api: Api, method: str, path: str, status: int) -> None:
    reply = api.call(method, path)
    assert reply.status == status
    assert reply.json()["status"] == status


def test_scopes_and_sites_from_the_authorizer(api: Api) -> None:
    api.claims = {"claims": {"sites": "[other]"}, "scopes": ["dicom/read"]}
    assert api.get("/dicomweb/studies").status == 204
    api.claims = {"claims": {"sites": "default"}, "scopes": ["dicom/read"]}
    assert len(api.get("/dicomweb/studies").json()) == 2
    api.claims = {"claims": {"sites": "default"}, "scopes": ["other"]}
    assert api.get("/dicomweb/studies").status == 403
    stow = api.call("POST", "/dicomweb/studies", {"content-type": "multipart/related; boundary=x"}, b"--x--")
    assert stow.status == 403
