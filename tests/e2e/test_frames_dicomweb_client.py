"""`dicomweb-client` against the local stand-in: retrieve_instance_frames, retrieve_bulkdata, and 406."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.encaps import generate_frames
from requests.exceptions import HTTPError

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dicom_factory import pydicom_file, series_from

pytestmark = pytest.mark.e2e

ELE = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def stored(stack: Stack) -> dict[str, Any]:
    client = DICOMwebClient(url=f"{stack.api}/dicomweb")
    instances = {}
    for kind, name in (
        ("rle", "MR_small_RLE.dcm"),
        ("multi", "examples_ybr_color.dcm"),
        ("ct", "CT_small.dcm"),
    ):
        ds = series_from(name, 1)[0]
        client.store_instances(datasets=[ds])
        instances[kind] = ds

    def indexed() -> bool:
        try:
            return all(
                client.search_for_instances(ds.StudyInstanceUID, ds.SeriesInstanceUID)
                for ds in instances.values()
            )
        except HTTPError:
            return False

    wait_for(indexed, 60, "the stored instances to be indexed")
    return {"client": client, **instances}


def uids(ds: Any) -> tuple[str, str, str]:
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_retrieve_instance_frames_as_stored_and_decoded(stored: dict[str, Any]) -> None:
    client: DICOMwebClient = stored["client"]
    multi = stored["multi"]
    original = dcmread(pydicom_file("examples_ybr_color.dcm"))
    expected = list(generate_frames(original.PixelData, number_of_frames=30))
    frames = client.retrieve_instance_frames(
        *uids(multi), frame_numbers=[2, 30], media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),)
    )
    assert frames == [expected[1], expected[29]]
    # decoded to native pixels: application/octet-stream, Explicit VR Little Endian
    rle = stored["rle"]
    (native,) = client.retrieve_instance_frames(
        *uids(rle), frame_numbers=[1], media_types=(("application/octet-stream", ELE),)
    )
    pixels = dcmread(pydicom_file("MR_small_RLE.dcm")).pixel_array
    assert np.array_equal(np.frombuffer(native, dtype=pixels.dtype.newbyteorder("<")), pixels.ravel())


def test_retrieve_bulkdata_of_the_metadata_uri(stored: dict[str, Any]) -> None:
    client: DICOMwebClient = stored["client"]
    ct = stored["ct"]
    metadata = client.retrieve_instance_metadata(*uids(ct))
    uri = metadata["7FE00010"]["BulkDataURI"]

    (value,) = client.retrieve_bulkdata(uri)
    assert value == dcmread(pydicom_file("CT_small.dcm")).PixelData


def test_what_cannot_be_served_is_406(stored: dict[str, Any]) -> None:
    client: DICOMwebClient = stored["client"]
    rle = stored["rle"]
    with pytest.raises(HTTPError) as refused:
        client.retrieve_instance_frames(
            *uids(rle), frame_numbers=[1], media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),)
        )
    assert refused.value.response.status_code == 406
    assert "error" in refused.value.response.json()
    with pytest.raises(HTTPError) as refused:
        client.retrieve_instance(*uids(rle), media_types=(("application/dicom", "1.2.840.10008.1.2.4.50"),))
    assert refused.value.response.status_code == 406
    # and what can be transcoded is
    instance = client.retrieve_instance(*uids(rle), media_types=(("application/dicom", ELE),))
    assert instance.file_meta.TransferSyntaxUID == ELE


def test_frames_and_thumbnails_requested_at_once_each_get_their_own_answer(
    stack: Stack, stored: dict[str, Any]
) -> None:
    # GIVEN a viewer loading a compressed image's frames and thumbnails in parallel (OHIF does),
    # each request with its own Accept header
    study, series, sop = uids(stored["rle"])
    base = f"{stack.api}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    wanted = [
        (f"{base}/frames/1", "multipart/related; type=application/octet-stream; transfer-syntax=*"),
        (f"{base}/thumbnail", "image/jpeg"),
    ] * 12

    def fetch(request: tuple[str, str]) -> tuple[int, str]:
        url, accept = request
        ask = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 - loopback
        with urllib.request.urlopen(ask, timeout=60) as reply:  # noqa: S310
            return reply.status, reply.headers["Content-Type"].split(";")[0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(fetch, wanted))
    # THEN every one is answered as its own Accept asked (a function shared by two requests at
    # once answered a frames request with a thumbnail's Accept: 406)
    assert answers == [(200, "multipart/related"), (200, "image/jpeg")] * 12
