"""Byte ranges of WADO-RS bulk data in process: 206/416, and one ranged GET for native Pixel Data."""

from __future__ import annotations

import re

import pytest
from ingest.process import ingest_object
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.conftest import Aws
from tests.helpers.dicom_factory import pydicom_file, series_from
from tests.helpers.part_support import put_part
from tests.helpers.query_api import Api, make_api

FILES = {"native": "CT_small.dcm", "multi_native": "rtdose.dcm", "rle": "MR_small_RLE.dcm"}
OCTET = "application/octet-stream"
MULTIPART = 'multipart/related; type="application/octet-stream"'


@pytest.fixture
def indexed(aws: Aws) -> tuple[Api, dict[str, Dataset]]:
    api = make_api(aws)
    instances = {}
    for i, (kind, name) in enumerate(FILES.items()):
        ds = series_from(name, 1)[0]
        ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_part(aws, [ds], f"r{i}"))
        instances[kind] = ds
    return api, instances


def pixel_url(ds: Dataset) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010"
    )


def pixels(kind: str) -> bytes:
    return bytes(dcmread(pydicom_file(FILES[kind])).PixelData)


@pytest.mark.parametrize("kind", ["native", "multi_native"])
def test_a_range_of_native_pixel_data_is_one_ranged_get_of_just_those_bytes(
    indexed: tuple[Api, dict[str, Dataset]], kind: str
) -> None:
    from query.dependencies import objects

    api, instances = indexed
    url, value = pixel_url(instances[kind]), pixels(kind)
    # The first request computes the pixel layout once (cached under frame-index/).
    assert api.get(url, accept=OCTET, range="bytes=0-0").status == 206
    for header, (first, last) in (
        ("bytes=100-1123", (100, 1123)),
        ("bytes=-64", (len(value) - 64, len(value) - 1)),
        (f"bytes={len(value) - 10}-", (len(value) - 10, len(value) - 1)),
    ):
        before, fetched = objects.requests, objects.members.bytes_fetched
        reply = api.get(url, accept=OCTET, range=header)
        assert reply.status == 206, reply.body[:200]
        assert reply.body == value[first : last + 1]
        assert reply.headers["content-range"] == f"bytes {first}-{last}/{len(value)}"
        assert reply.headers["content-type"] == OCTET
        # the cached layout (one small GET) and ONE ranged GET of exactly the range
        assert objects.requests - before <= 2
        assert objects.members.bytes_fetched - fetched <= (last - first + 1) + 4096


def test_a_range_in_a_multipart_answer_is_its_one_part(indexed: tuple[Api, dict[str, Dataset]]) -> None:
    # dicomweb-client's retrieve_bulkdata(byte_range=...) asks this way
    api, instances = indexed
    value = pixels("native")
    reply = api.get(pixel_url(instances["native"]), accept=MULTIPART, range="bytes=10-19")
    assert reply.status == 206
    assert reply.headers["content-type"].startswith("multipart/related")
    boundary = re.search(r"boundary=([^;]+)", reply.headers["content-type"]).group(1)  # type: ignore[union-attr]
    (part,) = [p for p in reply.body.split(b"--" + boundary.encode()) if b"\r\n\r\n" in p]
    assert part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") == value[10:20]
    assert reply.headers["content-range"] == f"bytes 10-19/{len(value)}"


def test_unsatisfiable_ranges_are_416_with_json_and_the_length(
    indexed: tuple[Api, dict[str, Dataset]],
) -> None:
    api, instances = indexed
    length = len(pixels("native"))
    reply = api.get(pixel_url(instances["native"]), accept=OCTET, range=f"bytes={length}-")
    assert reply.status == 416
    assert reply.headers["content-range"] == f"bytes */{length}"
    assert reply.json()["status"] == 416 and "not satisfiable" in reply.json()["error"]


def test_without_a_usable_range_the_whole_value_is_answered(indexed: tuple[Api, dict[str, Dataset]]) -> None:
    api, instances = indexed
    url, value = pixel_url(instances["native"]), pixels("native")
    for header in ("bytes=0-1,4-5", "bytes=9-3", "lines=1-2"):
        reply = api.get(url, accept=OCTET, range=header)
        assert (reply.status, reply.body) == (200, value)
    # an If-Range validator cannot match (none is ever sent): the whole value
    conditional = api.get(url, accept=OCTET, range="bytes=0-9", **{"if-range": '"abc"'})
    assert (conditional.status, conditional.body) == (200, value)
    plain = api.get(url, accept=OCTET)
    assert plain.status == 200 and plain.headers["accept-ranges"] == "bytes"


def test_encapsulated_single_frame_pixel_data_is_cut_from_its_value(
    indexed: tuple[Api, dict[str, Dataset]],
) -> None:
    from pydicom.encaps import generate_frames

    api, instances = indexed
    (frame,) = generate_frames(pixels("rle"), number_of_frames=1)
    reply = api.get(pixel_url(instances["rle"]), accept=OCTET, range="bytes=0-99")
    assert reply.status == 206 and reply.body == frame[:100]
    assert reply.headers["content-range"] == f"bytes 0-99/{len(frame)}"
