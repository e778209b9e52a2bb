"""The decode limits through the API: STOW refuses a bomb with a reason, rendered answers 413 with JSON."""

from __future__ import annotations

import pytest
from ingest.process import ingest_object

from tests import decode_bombs
from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from
from tests.helpers.part_support import put_part
from tests.helpers.query_api import Api, make_api, stow_request

MIB = 1024 * 1024
STOW, _ = stow_request([], boundary="B")


def multipart(*parts: bytes) -> bytes:
    return stow_request(parts, boundary="B")[1]


@pytest.fixture
def api(aws: Aws) -> Api:
    return make_api(aws)


def test_stow_refuses_a_deflate_bomb_with_a_failed_sop_reason_and_keeps_the_rest(api: Api) -> None:
    # GIVEN one good instance and one 0.3 MB file inflating to 256 MB
    good = series_from("CT_small.dcm", 1)[0]
    reply = api.call(
        "POST", "/dicomweb/studies", STOW, multipart(encode(good), decode_bombs.deflate_bomb(256 * MIB))
    )
    # THEN the good one is stored, the bomb refused as out of resources, with a comment saying why
    assert reply.status == 202
    answer = reply.json()
    assert len(answer["00081199"]["Value"]) == 1
    [failed] = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA700]
    assert "inflates beyond" in failed["00000902"]["Value"][0]


def test_stow_refuses_an_instance_whose_one_frame_is_over_the_decode_budget(api: Api) -> None:
    reply = api.call("POST", "/dicomweb/studies", STOW, multipart(decode_bombs.rle_bomb(8000, 8000)))
    assert reply.status == 409
    [failed] = reply.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA700]
    assert failed["00000902"]["Value"] == ["decoded pixels: 128000000 bytes > limit 100663296"]


def test_stow_refuses_too_many_parts_with_413(api: Api) -> None:
    reply = api.call("POST", "/dicomweb/studies", STOW, multipart(*([b"x"] * 1001)))
    assert reply.status == 413
    assert reply.json() == {"error": "more than 1000 parts in one request", "status": 413}


def test_rendered_and_preview_of_an_rle_instance_declaring_8000_by_8000_are_413(aws: Aws, api: Api) -> None:
    # GIVEN an indexed 6 KB RLE instance whose header declares 8000 x 8000 x 16 bits (128 MB)
    ds = series_from("MR_small_RLE.dcm", 1)[0]
    ds.Rows, ds.Columns = 8000, 8000
    ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_part(aws, [ds], "bomb"))
    base = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    # WHEN its picture is asked for THEN 413 with a JSON reason, before any decoding
    for path in (
        f"{base}/instances/{ds.SOPInstanceUID}/rendered",
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/preview.png",
    ):
        reply = api.get(path)
        assert reply.status == 413, path
        assert reply.json()["status"] == 413
        assert "decoded pixels: 128000000 bytes > limit 50331648" in reply.json()["error"]


def test_ingest_rejects_element_and_item_bombs_by_count_and_indexes_the_rest(aws: Aws) -> None:
    import tracemalloc

    from tests.helpers.dicom_factory import zip_part

    # GIVEN a part with a good instance, 1,000,000 empty elements and 1,000,000 empty items (8 MB each)
    good = series_from("CT_small.dcm", 1)[0]
    members = {
        f"{good.SOPInstanceUID}.dcm": encode(good),
        "elements.dcm": decode_bombs.element_bomb(1_000_000),
        "items.dcm": decode_bombs.item_bomb(1_000_000),
    }
    key = f"incoming/{good.StudyInstanceUID}/{good.SeriesInstanceUID}/bombs.zip"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=zip_part(members))
    # WHEN it is ingested
    tracemalloc.start()
    try:
        report = ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # THEN both bombs are rejected by count, the good instance indexed, and no bomb was parsed
    reasons = {r["member"]: r["reason"] for r in report.rejected}
    assert reasons == {
        "elements.dcm": "more than 200000 data elements",
        "items.dcm": "more than 50000 sequence items or fragments",
    }
    assert report.indexed == [good.SOPInstanceUID]
    # (pydicom alone holds ~315 MB for the elements and ~660 MB for the items: see bench/decode_bombs.py)
    assert peak < 150 * MIB
