"""The `dicomweb-client` package (a DICOMweb client nobody here wrote) against the local stand-in's API.

Store (STOW-RS) -> ingest -> search (QIDO-RS) -> metadata, retrieve and rendered (WADO-RS).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from requests.exceptions import HTTPError

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dicom_factory import series_from

pytestmark = pytest.mark.e2e


def test_dicomweb_client_round_trip(stack: Stack) -> None:
    # GIVEN a 3-instance CT series and a client pointed at /dicomweb
    series = series_from("CT_small.dcm", 3)
    for ds in series:
        ds.PatientName = "Client^Roundtrip"
        ds.PatientID = "DWC-1"
    study_uid, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    client = DICOMwebClient(url=f"{stack.api}/dicomweb")

    # WHEN the client stores them (STOW-RS)
    answer = client.store_instances(datasets=series)

    # THEN every instance is referenced and the part goes through ingest
    assert len(answer.ReferencedSOPSequence) == 3

    def indexed() -> list[dict[str, Any]] | None:
        try:
            return client.search_for_instances(study_uid, series_uid) or None
        except HTTPError:  # 404 until ingest has indexed the study
            return None

    found = wait_for(indexed, 60, "the stored series indexed")
    assert len(found) == 3

    # AND search, metadata, retrieve and rendered answer it
    studies = client.search_for_studies(search_filters={"PatientID": "DWC-1"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study_uid]
    all_series = client.search_for_series(search_filters={"Modality": "CT", "PatientID": "DWC-1"})
    assert [s["0020000E"]["Value"][0] for s in all_series] == [series_uid]
    metadata = client.retrieve_series_metadata(study_uid, series_uid)
    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(ds.SOPInstanceUID for ds in series)
    instance = client.retrieve_instance(study_uid, series_uid, series[1].SOPInstanceUID)
    assert instance.SOPInstanceUID == series[1].SOPInstanceUID
    assert instance.pixel_array.shape == series[1].pixel_array.shape
    retrieved = client.retrieve_series(study_uid, series_uid)
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(ds.SOPInstanceUID for ds in series)
    png = client.retrieve_instance_rendered(
        study_uid, series_uid, series[0].SOPInstanceUID, media_types=("image/png",)
    )
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (series[0].Columns, series[0].Rows))
