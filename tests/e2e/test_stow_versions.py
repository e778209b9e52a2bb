"""STOW-RS of changed bytes under an indexed SOP Instance UID is a new version (dicomweb-client).

Policy (README, Ingest): latest received wins in the index, the earlier version stays in the
instance's history, the part report says ``updated``; identical bytes are a no-op (0x0111).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from requests.exceptions import HTTPError

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dicom_factory import series_from

pytestmark = pytest.mark.e2e
DUPLICATE = 0x0111


def test_stow_of_changed_bytes_is_a_new_version_and_identical_bytes_a_no_op(stack: Stack) -> None:
    # GIVEN an instance stored and indexed through STOW-RS under a wrong name
    [ds] = series_from("CT_small.dcm", 1)
    ds.PatientName, ds.PatientID = "Wrong^Name", "STOW-V1"
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    client = DICOMwebClient(url=f"{stack.api}/dicomweb")
    assert len(client.store_instances(datasets=[ds]).ReferencedSOPSequence) == 1

    def names() -> list[str]:
        try:
            found = client.search_for_instances(study, series, fields=["PatientName"]) or []
        except HTTPError:
            return []
        return [str(i.get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", "")) for i in found]

    wait_for(lambda: names() == ["Wrong^Name"] or None, 60, "the first version indexed")

    # WHEN the PACS corrects the name and stores the instance again (same SOP Instance UID)
    ds.PatientName = "Right^Name"
    answer = client.store_instances(datasets=[ds])

    # THEN STOW accepts it (not 0x0111) and ingest makes it the indexed version
    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [sop]
    assert "FailedSOPSequence" not in answer
    wait_for(lambda: names() == ["Right^Name"] or None, 60, "the new version indexed")
    assert client.retrieve_instance(study, series, sop).PatientName == "Right^Name"
    assert [
        s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"PatientName": "Right*"})
    ] == [study]
    assert client.search_for_studies(search_filters={"PatientName": "Wrong*"}) == []
    # AND the earlier version is listed in the instance's history, the report says "updated"
    status, _, versions = stack.get(f"/api/studies/{study}/series/{series}/instances/{sop}/versions")
    assert status == 200
    assert len(versions["history"]) == 1
    assert versions["history"][0]["replaced_by"] == versions["current"]["part_id"]
    report_key = f"reports/{study}/{series}/{versions['current']['part_id']}.json"
    report = json.loads(stack.s3().get_object(Bucket=stack.bucket, Key=report_key)["Body"].read())
    assert report["updated"] == [sop]
    # AND the study still counts one instance
    [found] = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert found["00201208"]["Value"] == [1]

    # WHEN the same corrected bytes are stored once more
    with pytest.raises(HTTPError) as refused:
        client.store_instances(datasets=[ds])
    # THEN it is a no-op: 409 with FailureReason 0x0111 (duplicate) and no new part
    assert refused.value.response is not None and refused.value.response.status_code == 409
    body: dict[str, Any] = refused.value.response.json()
    [failed] = body["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [DUPLICATE]
    assert failed["00081155"]["Value"] == [sop]
    parts = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix=f"incoming/{study}/{series}/")
    assert len(parts["Contents"]) == 2
