"""Versions through the gateway (issue 13): a correction undone by re-sending the earlier version.

Policy (README, Edge gateway and Ingest): a re-send is dropped only when it equals the latest
version the gateway shipped; anything else ships, and the index keeps the latest received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from requests.exceptions import HTTPError

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dcmtk import store_with_dcmtk
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import send_files

pytestmark = pytest.mark.e2e
DUPLICATE = 0x0111


def test_an_earlier_version_resent_through_the_gateway_becomes_the_indexed_one_again(
    stack: Stack, tmp_path: Path
) -> None:
    # GIVEN one instance in two versions that differ only in PatientName
    [ds] = series_from("CT_small.dcm", 1)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    files = {}
    for name in ("Undo^First", "Undo^Second"):
        ds.PatientName = name
        files[name] = tmp_path / f"{name.split('^')[1]}.dcm"
        ds.save_as(files[name], enforce_file_format=True)

    def versions() -> dict[str, Any] | None:
        status, _, found = stack.get(f"/api/studies/{study}/series/{series}/instances/{sop}/versions")
        return found if status == 200 else None

    def indexed_name() -> str:
        path = f"/dicomweb/studies/{study}/series/{series}/instances?includefield=00100010"
        status, _, found = stack.get(path)
        if status != 200 or not found:
            return ""
        return str(found[0].get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", ""))

    # WHEN dcmtk storescu sends v1, then v2, then v1 again, each after the previous was indexed
    for receipts, name in enumerate(("Undo^First", "Undo^Second", "Undo^First"), start=1):
        store_with_dcmtk(stack.dicom_port, [files[name]])

        def received(count: int = receipts, want: str = name) -> bool:
            found = versions()
            return found is not None and 1 + len(found["history"]) == count and indexed_name() == want

        wait_for(received, 90, f"receipt {receipts} ({name}) indexed")

    # THEN the index holds v1's name again, and the history lists the three receipts
    found = versions()
    assert found is not None
    assert indexed_name() == "Undo^First"
    assert len(found["history"]) == 2
    parts = [found["current"]["part_id"], *(v["part_id"] for v in found["history"])]
    assert len(set(parts)) == 3
    assert found["current"]["fingerprint"] != found["history"][0]["fingerprint"]
    assert found["current"]["fingerprint"] == found["history"][1]["fingerprint"]
    # AND a study search by the undone name finds nothing
    status, _, right = stack.get("/dicomweb/studies?PatientName=Undo^Second")
    assert status == 204 or study not in [s["0020000D"]["Value"][0] for s in right]


def test_the_same_data_set_through_stow_after_the_gateway_is_a_duplicate_and_a_changed_one_a_version(
    stack: Stack, tmp_path: Path
) -> None:
    # GIVEN an instance received by the gateway (a C-STORE of the file's data set as it is) and indexed
    [ds] = series_from("CT_small.dcm", 1)
    ds.PatientName = "Gate^Way"
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    path = tmp_path / "instance.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert send_files(stack.dicom_port, [path]).statuses == [0x0000]

    def versions() -> dict[str, Any] | None:
        status, _, found = stack.get(f"/api/studies/{study}/series/{series}/instances/{sop}/versions")
        return found if status == 200 else None

    first = wait_for(versions, 90, "the gateway's copy indexed")
    # STOW-RS into the gateway's site (the partition): versions are compared within a site
    client = DICOMwebClient(url=f"{stack.api}/dicomweb/partitions/{first['site']}")

    # WHEN the same data set is stored through STOW-RS (dicomweb-client writes its own file meta)
    ds.file_meta.SourceApplicationEntityTitle = "STOW_CLIENT"
    with pytest.raises(HTTPError) as refused:
        client.store_instances(datasets=[ds])

    # THEN it is a duplicate (0x0111), no new part
    assert refused.value.response is not None and refused.value.response.status_code == 409
    [failed] = refused.value.response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [DUPLICATE]

    # WHEN the data set changes, THEN STOW stores it as a new version of the gateway's copy
    ds.PatientName = "Sto^W"
    answer = client.store_instances(datasets=[ds])
    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [sop]
    found = wait_for(
        lambda: (v := versions()) and len(v["history"]) == 1 and v, 90, "the STOW version indexed"
    )
    assert found["history"][0]["part_id"] == first["current"]["part_id"]
    parts = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix=f"incoming/{study}/{series}/")
    assert len(parts["Contents"]) == 2
