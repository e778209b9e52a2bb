"""A site is a partition: two sites holding the same UIDs never see, count or overwrite each other's data.

Site A and site B both index StudyInstanceUID S / SeriesInstanceUID R; A has three
instances of patient PID-A, B one instance (one of A's SOP UIDs) of patient PID-B
with another modality. Every read route and STOW is asked with a token for A, for
B and for A+B.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from common import keys
from ingest.process import ingest_object
from pydicom.dataset import Dataset

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from
from tests.helpers.part_support import put_site_part
from tests.helpers.query_api import Api, make_api, stow_request

READ_WRITE = ["dicom/read", "dicom/write"]
SOP, STUDY, SERIES = "00080018", "0020000D", "0020000E"


class Sites:
    def __init__(self, api: Api, a: list[Dataset], b: list[Dataset]) -> None:
        self.api, self.a, self.b = api, a, b
        self.study, self.series = a[0].StudyInstanceUID, a[0].SeriesInstanceUID

    def as_sites(self, *sites: str) -> Api:
        self.api.claims = {"claims": {"sites": " ".join(sites)}, "scopes": READ_WRITE}
        return self.api


@pytest.fixture
def sites(aws: Aws) -> Sites:
    a = series_from("CT_small.dcm", 3)
    for ds in a:
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Alice^Ann", "PID-A", "ACC-A"
    b = [copy.deepcopy(a[0])]
    b[0].PatientName, b[0].PatientID, b[0].AccessionNumber, b[0].Modality = "Bob^Ben", "PID-B", "ACC-B", "OT"
    for site, instances in (("site-a", a), ("site-b", b)):
        report = ingest_object(
            aws.s3, aws.dynamodb, aws.table, aws.bucket, put_site_part(aws, site, instances, f"{site}-p1")
        )
        assert report.status == "indexed" and report.site == site
    return Sites(make_api(aws), a, b)


def read_paths(study: str, series: str, sop: str) -> list[str]:
    return [
        f"/dicomweb/studies?StudyInstanceUID={study}",
        f"/dicomweb/studies/{study}/series",
        f"/dicomweb/studies/{study}/instances",
        f"/dicomweb/studies/{study}/series/{series}/instances",
        f"/dicomweb/studies/{study}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        f"/dicomweb/studies/{study}/series/{series}",
        f"/dicomweb/studies/{study}",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered",
        f"/api/studies/{study}",
        f"/api/studies/{study}/series/{series}",
        f"/api/studies/{study}/series/{series}/download",
        f"/api/studies/{study}/series/{series}/preview.png",
        f"/api/studies/{study}/series/{series}/instances/{sop}/attributes/PatientID",
    ]


def test_the_same_uids_in_two_sites_are_two_studies_with_their_own_counts(aws: Aws, sites: Sites) -> None:
    def study_item(site: str) -> dict[str, Any]:
        raw = aws.dynamodb.get_item(
            TableName=aws.table,
            Key={"pk": {"S": keys.study_pk(site, sites.study)}, "sk": {"S": keys.STUDY_SK}},
        )["Item"]
        return {k: next(iter(v.values())) for k, v in raw.items()}

    a, b = study_item("site-a"), study_item("site-b")
    assert (a["site"], a["PatientID"], a["instance_count"], a["modalities"]) == (
        "site-a",
        "PID-A",
        "3",
        ["CT"],
    )
    assert (b["site"], b["PatientID"], b["instance_count"], b["modalities"]) == (
        "site-b",
        "PID-B",
        "1",
        ["OT"],
    )


@pytest.mark.parametrize(
    ("site", "own", "other"), [("site-a", b"PID-A", b"PID-B"), ("site-b", b"PID-B", b"PID-A")]
)
def test_a_single_site_token_sees_only_its_own_site_on_every_read_route(
    sites: Sites, site: str, own: bytes, other: bytes
) -> None:
    api = sites.as_sites(site)
    sop = sites.a[0].SOPInstanceUID
    for path in read_paths(sites.study, sites.series, sop):
        reply = api.get(path)
        assert reply.status == 200, (path, reply.body[:200])
        assert other not in reply.body, path
    counts = api.get(f"/dicomweb/studies/{sites.study}/series").json()[0]["00201209"]["Value"][0]
    assert counts == (3 if site == "site-a" else 1)
    assert api.get(f"/api/studies/{sites.study}/series/{sites.series}").json()["site"] == site


@pytest.mark.parametrize(
    ("site", "hits", "misses"),
    [
        (
            "site-a",
            ["PatientID=PID-A", "ModalitiesInStudy=CT", "AccessionNumber=ACC-A", "PatientName=alice*"],
            ["PatientID=PID-B", "ModalitiesInStudy=OT", "AccessionNumber=ACC-B", "PatientName=bob*"],
        ),
        (
            "site-b",
            ["PatientID=PID-B", "ModalitiesInStudy=OT", "AccessionNumber=ACC-B", "PatientName=bob*"],
            ["PatientID=PID-A", "ModalitiesInStudy=CT", "AccessionNumber=ACC-A", "PatientName=alice*"],
        ),
    ],
)
def test_lookups_answer_from_the_own_site_only(
    sites: Sites, site: str, hits: list[str], misses: list[str]
) -> None:
    api = sites.as_sites(site)
    for query in hits:
        reply = api.get(f"/dicomweb/studies?{query}")
        assert reply.status == 200, query
        assert [r["00100020"]["Value"][0] for r in reply.json()] == ["PID-A" if site == "site-a" else "PID-B"]
    for query in misses:
        assert api.get(f"/dicomweb/studies?{query}").status == 204, query
        assert api.get(f"/dicomweb/series?{query}").status == 204, query
    # A partition the token does not name is the same 404 as one that does not exist.
    other = "site-b" if site == "site-a" else "site-a"
    assert api.get(f"/dicomweb/partitions/{other}/studies").status == 404
    assert api.get("/dicomweb/partitions/nowhere/studies").status == 404
    assert api.get(f"/dicomweb/studies/{sites.study}/series?site={other}").status == 404


def test_a_multi_site_token_gets_results_tagged_with_their_partition(sites: Sites) -> None:
    api = sites.as_sites("site-a", "site-b")
    results = api.get(f"/dicomweb/studies?StudyInstanceUID={sites.study}").json()
    assert sorted((r["00091001"]["Value"][0], r["00100020"]["Value"][0]) for r in results) == [
        ("site-a", "PID-A"),
        ("site-b", "PID-B"),
    ]
    for result in results:
        site = result["00091001"]["Value"][0]
        url = result["00081190"]["Value"][0]
        path = f"/dicomweb/partitions/{site}/studies/{sites.study}"
        assert url.startswith(("http://", "https://")) and url.endswith(path), url
        # The retrieve URL answers that site's study.
        series = api.get(path + "/series").json()
        assert series[0]["00091001"]["Value"][0] == site
        assert series[0]["00201209"]["Value"][0] == (3 if site == "site-a" else 1)
    # The JSON answers keep patients of two sites apart.
    for pid, site in (("PID-A", "site-a"), ("PID-B", "site-b")):
        [found] = api.get(f"/api/patients?id={pid}").json()["patients"]
        assert found["site"] == site and [s["site"] for s in found["studies"]] == [site]
    # Without a partition, a UID two of the caller's sites hold is ambiguous: a 400 naming them.
    for path in read_paths(sites.study, sites.series, sites.a[0].SOPInstanceUID)[1:]:
        reply = api.get(path)
        assert reply.status == 400, path
        assert "site-a, site-b" in reply.json()["error"]
    for path in read_paths(sites.study, sites.series, sites.a[0].SOPInstanceUID):
        for site, other in (("site-a", b"PID-B"), ("site-b", b"PID-A")):
            prefix = path.split("/")[1]
            scoped = path.replace(f"/{prefix}/", f"/{prefix}/partitions/{site}/", 1)
            reply = api.get(scoped)
            assert reply.status == 200, scoped
            assert other not in reply.body, scoped
            assert api.get(f"{path}{'&' if '?' in path else '?'}site={site}").status == 200


def stow_body(instances: list[Dataset]) -> tuple[dict[str, str], bytes]:
    return stow_request(map(encode, instances))


def test_stow_duplicates_are_checked_in_the_own_site_only(sites: Sites) -> None:
    api = sites.as_sites("site-b")
    # A's second instance is unknown to B: accepted, the 409 never reveals A's holdings.
    headers, body = stow_body([sites.a[1]])
    assert api.call("POST", "/dicomweb/studies", headers, body).status == 200
    headers, body = stow_body([sites.b[0]])
    assert api.call("POST", "/dicomweb/studies", headers, body).status == 409
    # A two-site token names the partition it stores into.
    api = sites.as_sites("site-a", "site-b")
    headers, body = stow_body([sites.a[2]])
    assert api.call("POST", "/dicomweb/studies", headers, body).status == 400
    assert api.call("POST", "/dicomweb/partitions/site-a/studies", headers, body).status == 409
    stored = api.call("POST", "/dicomweb/partitions/site-b/studies", headers, body)
    assert stored.status == 200
    assert api.call("POST", "/dicomweb/partitions/site-c/studies", headers, body).status == 400
    # Its RetrieveURL names the partition it went to: without it, this UID (in A too) is a 400.
    [referenced] = stored.json()["00081199"]["Value"]
    assert "/dicomweb/partitions/site-b/studies/" in referenced["00081190"]["Value"][0]
    # A one-site token stores without naming one, and gets plain URLs (as its QIDO answers).
    headers, body = stow_body(series_from("CT_small.dcm", 1))
    stored = sites.as_sites("site-b").call("POST", "/dicomweb/studies", headers, body)
    [referenced] = stored.json()["00081199"]["Value"]
    assert "/partitions/" not in referenced["00081190"]["Value"][0]
