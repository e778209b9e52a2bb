"""WADO-RS retrieve frames in process: one ranged GET per frame, parts as OHIF's loader parses them."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import numpy as np
import pytest
from ingest.process import ingest_object
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from tests.conftest import Aws
from tests.helpers.dicom_factory import pydicom_file, series_from
from tests.helpers.part_support import put_part
from tests.helpers.query_api import Api, make_api

FILES = {
    "native": "CT_small.dcm",
    "rle": "MR_small_RLE.dcm",
    "jls": "MR_small_jpeg_ls_lossless.dcm",
    "j2k": "MR_small_jp2klossless.dcm",
    "multi_jpeg": "examples_ybr_color.dcm",
    "multi_native": "rtdose.dcm",
    "multi_rle": "SC_rgb_rle_2frame.dcm",
    "deflated": "image_dfl.dcm",
}


@pytest.fixture(scope="module")
def instances(module_aws: Aws) -> dict[str, Dataset]:
    """One instance of each kind, indexed once for the module (the tests read; the frame
    index and thumbnail caches they fill are per instance)."""
    aws = module_aws
    indexed = {}
    for i, (kind, name) in enumerate(FILES.items()):
        ds = series_from(name, 1)[0]
        ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_part(aws, [ds], f"f{i}"))
        indexed[kind] = ds
    return indexed


@pytest.fixture
def indexed(module_aws: Aws, instances: dict[str, Dataset]) -> tuple[Api, dict[str, Dataset]]:
    return make_api(module_aws), instances


def url(ds: Dataset, frames: str) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/{frames}"
    )


def cornerstone_parts(body: bytes) -> tuple[str, bytes]:
    """What cornerstone's extractMultipart takes out of a response (its algorithm, in Python)."""
    token = body.index(b"\r\n\r\n")
    lines = body[:token].decode("latin-1").split("\r\n")
    boundary = next(line for line in lines if line[:2] == "--")
    content_type = next(line[13:].strip() for line in lines if line[:13] == "Content-Type:")
    end = body.index(boundary.encode(), token + 4)
    return content_type, body[token + 4 : end - 2]


def stored_frames(name: str) -> list[bytes]:
    ds = dcmread(pydicom_file(name))
    count = int(ds.get("NumberOfFrames") or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    size = len(ds.PixelData) // count
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]


ANY_TS = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.mark.parametrize("kind", list(FILES))
def test_each_frame_is_the_stored_frame_in_cornerstones_format(
    indexed: tuple[Api, dict[str, Dataset]], kind: str
) -> None:
    api, instances = indexed
    ds = instances[kind]
    expected = stored_frames(FILES[kind])
    for number in (1, len(expected)):
        # WHEN OHIF asks for a frame as stored (its default Accept)
        reply = api.get(url(ds, str(number)), accept=ANY_TS)
        # THEN the part is exactly the stored frame, labelled with the stored transfer syntax
        assert reply.status == 200, reply.body
        assert reply.headers["content-type"].startswith("multipart/related")
        content_type, data = cornerstone_parts(reply.body)
        assert data == expected[number - 1]
        served = ds.file_meta.TransferSyntaxUID
        if served == "1.2.840.10008.1.2.1.99":  # a deflated data set's frames are served inflated
            served = "1.2.840.10008.1.2.1"
        assert content_type == f"application/octet-stream; transfer-syntax={served}"


def test_multi_frame_instance_costs_one_get_per_frame_once_indexed(
    module_aws: Aws, indexed: tuple[Api, dict[str, Dataset]]
) -> None:
    from query.dependencies import objects

    api, instances = indexed
    ds = instances["multi_jpeg"]
    expected = stored_frames(FILES["multi_jpeg"])
    assert api.get(url(ds, "1"), accept=ANY_TS).status == 200  # builds and stores the frame index
    listed = module_aws.s3.list_objects_v2(Bucket=module_aws.bucket, Prefix="frame-index/")["Contents"]
    assert len([o["Key"] for o in listed if ds.SOPInstanceUID in o["Key"]]) == 1
    for number in (7, 30, 15):
        before, fetched = objects.requests, objects.members.bytes_fetched
        _, data = cornerstone_parts(api.get(url(ds, str(number)), accept=ANY_TS).body)
        assert data == expected[number - 1]
        assert objects.requests - before == 1
        # the frame plus its item header: never the whole instance
        assert objects.members.bytes_fetched - fetched <= len(data) + 8 * 4


def test_frame_list_answers_parts_in_order(indexed: tuple[Api, dict[str, Dataset]]) -> None:
    api, instances = indexed
    ds = instances["multi_native"]
    expected = stored_frames(FILES["multi_native"])
    reply = api.get(url(ds, "3,1,15"), accept=ANY_TS)
    assert [content for _, content in reply.parts()] == [expected[2], expected[0], expected[14]]


def test_uncompressed_frames_decoded_when_asked(indexed: tuple[Api, dict[str, Dataset]]) -> None:
    api, instances = indexed
    ds = instances["rle"]
    reply = api.get(
        url(ds, "1"),
        accept='multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1',
    )
    assert reply.status == 200, reply.body
    content_type, data = cornerstone_parts(reply.body)
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    pixels = dcmread(pydicom_file(FILES["rle"])).pixel_array
    assert np.array_equal(
        np.frombuffer(data, dtype="<i2" if pixels.dtype.kind == "i" else "<u2"), pixels.ravel()
    )


def test_compressed_media_type_and_refusals(indexed: tuple[Api, dict[str, Dataset]]) -> None:
    api, instances = indexed
    jls = instances["jls"]
    reply = api.get(url(jls, "1"), accept='multipart/related; type="image/jls"')
    assert reply.status == 200
    assert cornerstone_parts(reply.body)[0] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    # a compressed type the frame is not stored in: never re-encoded
    assert api.get(url(jls, "1"), accept='multipart/related; type="image/jp2"').status == 406
    # q=0 rules a range out; the next one is taken
    accept = 'multipart/related; type="image/jls"; q=0, ' + ANY_TS
    assert cornerstone_parts(api.get(url(jls, "1"), accept=accept).body)[0].startswith(
        "application/octet-stream"
    )
    assert api.get(url(jls, "1"), accept="text/html").status == 406
    assert api.get(url(jls, "0"), accept=ANY_TS).status == 400
    assert api.get(url(jls, "1,a"), accept=ANY_TS).status == 400
    reply = api.get(url(jls, "2"), accept=ANY_TS)
    assert reply.status == 404 and "error" in reply.json()


def instance_url(ds: Dataset) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def test_rle_instance_transcoded_to_explicit_little_endian_or_406(
    indexed: tuple[Api, dict[str, Dataset]],
) -> None:
    api, instances = indexed
    ds = instances["rle"]
    # AS the issue reported: these three used to answer the RLE bytes
    reply = api.get(instance_url(ds), accept="application/dicom; transfer-syntax=1.2.840.10008.1.2.1")
    assert reply.status == 200
    decoded = dcmread(io.BytesIO(reply.body))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert decoded.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(decoded.pixel_array, dcmread(pydicom_file(FILES["rle"])).pixel_array)
    assert api.get(instance_url(ds), accept="application/octet-stream").status == 406
    assert api.get(instance_url(ds), accept="image/jpeg").status == 406
    assert (
        api.get(instance_url(ds), accept="application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50").status
        == 406
    )
    # as stored when asked with transfer-syntax=*
    stored = api.get(instance_url(ds), accept="application/dicom; transfer-syntax=*")
    assert dcmread(io.BytesIO(stored.body)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"


def test_metadata_bulk_data_uris_resolve_to_the_values(indexed: tuple[Api, dict[str, Dataset]]) -> None:
    api, instances = indexed
    ds = instances["multi_native"]
    (header,) = api.get(instance_url(ds) + "/metadata").json()
    uri = header["7FE00010"]["BulkDataURI"]
    assert uri.startswith("http") and uri.endswith(instance_url(ds) + "/bulkdata/7FE00010")
    reply = api.get(urlsplit(uri).path, accept="application/octet-stream")
    assert reply.status == 200 and reply.body == dcmread(pydicom_file(FILES["multi_native"])).PixelData
    multipart = api.get(urlsplit(uri).path, accept='multipart/related; type="application/octet-stream"')
    assert multipart.headers["content-type"].startswith("multipart/related")
    assert cornerstone_parts(multipart.body)[1] == reply.body
    assert api.get(instance_url(ds) + "/bulkdata/7FE0", accept="*/*").status == 400
    assert api.get(instance_url(ds) + "/bulkdata/00100010", accept="*/*").status == 404


def test_thumbnails_of_study_series_and_instance_are_cached(
    module_aws: Aws, indexed: tuple[Api, dict[str, Dataset]]
) -> None:
    from PIL import Image

    api, instances = indexed
    ds = instances["native"]
    series = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    for path in (f"/dicomweb/studies/{ds.StudyInstanceUID}", series, instance_url(ds)):
        reply = api.get(path + "/thumbnail")
        assert reply.status == 200 and reply.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(reply.body)).size == (128, 128)
    png = api.get(instance_url(ds) + "/thumbnail?viewport=64,64", accept="image/png")
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.body)).size == (64, 64)
    cached = module_aws.s3.list_objects_v2(Bucket=module_aws.bucket, Prefix="thumbnails/")["Contents"]
    assert len(cached) == 2  # one per size and media type of the one instance
    assert api.get(instance_url(ds) + "/thumbnail", accept="text/html").status == 406
    assert api.get(instance_url(ds) + "/thumbnail?viewport=9999,1").status == 400
