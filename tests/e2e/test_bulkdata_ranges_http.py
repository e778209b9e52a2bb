"""Bulk data byte ranges over real HTTP against the local stand-in: requests and dicomweb-client."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from requests.exceptions import HTTPError

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dicom_factory import pydicom_file, series_from

pytestmark = pytest.mark.e2e

NAME = "CT_small.dcm"


@pytest.fixture(scope="module")
def pixel_uri(stack: Stack) -> str:
    client = DICOMwebClient(url=f"{stack.api}/dicomweb")
    ds = series_from(NAME, 1)[0]
    client.store_instances(datasets=[ds])

    def metadata() -> Any:
        try:
            return client.retrieve_instance_metadata(
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
            )
        except HTTPError:
            return None

    header = wait_for(metadata, 60, "the stored instance to be indexed")
    return str(header["7FE00010"]["BulkDataURI"])


def test_requests_gets_206_416_and_the_whole_value(pixel_uri: str) -> None:
    value = bytes(dcmread(pydicom_file(NAME)).PixelData)
    octet = {"Accept": "application/octet-stream"}
    # GIVEN a closed range, an open one and a suffix
    for header, piece in (
        ("bytes=0-511", value[:512]),
        ("bytes=1000-", value[1000:]),
        ("bytes=-256", value[-256:]),
    ):
        reply = requests.get(pixel_uri, headers={**octet, "Range": header}, timeout=30)
        assert reply.status_code == 206, reply.text[:200]
        assert reply.content == piece
        first = value.index(piece) if header != "bytes=-256" else len(value) - 256
        assert reply.headers["Content-Range"] == f"bytes {first}-{first + len(piece) - 1}/{len(value)}"
        assert int(reply.headers["Content-Length"]) == len(piece)
    # a range past the end: 416 with a JSON body
    refused = requests.get(pixel_uri, headers={**octet, "Range": f"bytes={len(value)}-"}, timeout=30)
    assert refused.status_code == 416
    assert refused.headers["Content-Range"] == f"bytes */{len(value)}"
    assert refused.json()["status"] == 416
    # no Range: the whole value, and the server says it takes ranges
    whole = requests.get(pixel_uri, headers=octet, timeout=30)
    assert whole.status_code == 200 and whole.content == value
    assert whole.headers["Accept-Ranges"] == "bytes"


def test_dicomweb_client_retrieve_bulkdata_with_a_byte_range(stack: Stack, pixel_uri: str) -> None:
    value = bytes(dcmread(pydicom_file(NAME)).PixelData)
    client = DICOMwebClient(url=f"{stack.api}/dicomweb")
    (piece,) = client.retrieve_bulkdata(pixel_uri, byte_range=(128, 1151))
    assert piece == value[128:1152]
    (whole,) = client.retrieve_bulkdata(pixel_uri)
    assert whole == value
