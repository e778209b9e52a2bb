"""QIDO-RS as OHIF's worklist asks it: wildcards around every typed word, its includefield set, no Scan."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from ingest.process import ingest_object

from tests.conftest import Aws
from tests.helpers.dicom_factory import series_from
from tests.helpers.part_support import put_part
from tests.helpers.query_api import Api, make_api

DESCRIPTION = "00081030"
OHIF_INCLUDE = "00081030,00080060,00080090,00100030"


@pytest.fixture(scope="module")
def indexed(module_aws: Aws) -> Aws:
    """Two studies indexed once for the module: the tests only read."""
    aws = module_aws
    for i, (description, series_description) in enumerate(
        (("CT Thorax mit KM", "Lunge 1mm"), ("MR Knie", "PD fs"))
    ):
        instances = series_from("CT_small.dcm", 1)
        for ds in instances:
            ds.StudyDescription, ds.SeriesDescription = description, series_description
        ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_part(aws, instances, f"v{i}"))
    return aws


@pytest.fixture
def api(indexed: Aws) -> Api:
    return make_api(indexed)


def studies(api: Api, **params: str) -> list[str]:
    query = {"limit": "101", "offset": "0", "fuzzymatching": "true", "includefield": OHIF_INCLUDE, **params}
    reply = api.get("/dicomweb/studies?" + urlencode(query))
    assert reply.status in (200, 204), reply.body
    return [s[DESCRIPTION]["Value"][0] for s in reply.json()] if reply.status == 200 else []


def test_worklist_filters_as_ohif_sends_them(indexed: Aws, api: Api, request: pytest.FixtureRequest) -> None:
    operations: list[str] = []

    def record(model: Any, **_: Any) -> None:
        operations.append(model.name)

    # The search runs on the function's client (make_api pointed it at this moto).
    indexed.dynamodb.meta.events.register("before-call.dynamodb.*", record)
    request.addfinalizer(lambda: indexed.dynamodb.meta.events.unregister("before-call.dynamodb.*", record))
    # OHIF's Description box: *word*, any case
    assert studies(api, StudyDescription="*thorax*") == ["CT Thorax mit KM"]
    assert studies(api, StudyDescription="MR Knie") == ["MR Knie"]
    assert studies(api, StudyDescription="*Hüfte*") == []
    # its other boxes: patient name, MRN (by tag), accession, modality, date range
    assert len(studies(api, PatientName="*compressed*", **{"00100020": "*"}, ModalitiesInStudy="CT")) == 2
    assert len(studies(api, StudyDate="19700102-20991231", AccessionNumber="*")) == 2
    assert set(operations) <= {"Query", "GetItem", "BatchGetItem"}


def test_series_level_description_and_date(api: Api) -> None:
    (study,) = [
        s["0020000D"]["Value"][0] for s in api.get("/dicomweb/studies?StudyDescription=*knie*").json()
    ]
    found = api.get(f"/dicomweb/studies/{study}/series?SeriesDescription=*pd*&includefield=0008103E,00080021")
    assert found.status == 200 and found.json()[0]["0008103E"]["Value"] == ["PD fs"]
    assert api.get(f"/dicomweb/studies/{study}/series?SeriesDescription=*lunge*").status == 204
    assert api.get("/dicomweb/series?SeriesDescription=*lunge*").json()[0]["0008103E"]["Value"] == [
        "Lunge 1mm"
    ]
