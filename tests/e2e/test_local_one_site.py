"""`make run` is one site: C-STORE through its gateway and STOW-RS without a partition meet in it.

Before, the gateway stored in ``local-edge`` and STOW in ``default``: a correction sent by STOW
made a second copy of the study, and every route by its StudyInstanceUID answered 400.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from common.part_format import DEFAULT_SITE
from dicomweb_client.api import DICOMwebClient

from local_cloud.stack import LocalCloudConfig
from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dcmtk import store_with_dcmtk
from tests.helpers.dicom_factory import series_from, write_series

pytestmark = pytest.mark.e2e


def test_the_local_gateway_stores_in_the_site_stow_uses() -> None:
    assert LocalCloudConfig().gateway_id == DEFAULT_SITE


def test_a_stow_correction_of_a_c_stored_instance_replaces_it_in_the_same_site(
    stack: Stack, tmp_path: Path
) -> None:
    # GIVEN a series C-STOREd through make run's gateway and indexed
    series = series_from("CT_small.dcm", 2)
    for ds in series:
        ds.PatientName, ds.PatientID = "Onesite^Wrong", "ONE-SITE-1"
    study = series[0].StudyInstanceUID
    store_with_dcmtk(stack.dicom_port, write_series(tmp_path, series))
    wait_for(
        lambda: stack.get(f"/dicomweb/studies?StudyInstanceUID={study}")[0] == 200 or None,
        90,
        "the C-STOREd series indexed",
    )

    # WHEN one instance is corrected and sent by STOW-RS, no partition named
    fixed = series[0]
    fixed.PatientName = "Onesite^Right"
    answer = DICOMwebClient(url=f"{stack.api}/dicomweb").store_instances(datasets=[fixed])
    assert "FailedSOPSequence" not in answer
    instance = f"/dicomweb/studies/{study}/series/{fixed.SeriesInstanceUID}/instances/{fixed.SOPInstanceUID}"

    def indexed_name() -> str | None:
        status, _, body = stack.get(f"{instance}/metadata")
        # 400 here was the bug: the study in two sites ("exists in several of your sites")
        assert status == 200, (status, body)
        name = str(body[0]["00100010"]["Value"][0]["Alphabetic"])
        return name if name == "Onesite^Right" else None

    # THEN it replaces the C-STOREd one in the same site: one study of two instances
    wait_for(indexed_name, 90, "the correction indexed")
    status, _, found = stack.get(f"/dicomweb/studies?StudyInstanceUID={study}")
    assert status == 200
    assert [s["00201208"]["Value"] for s in found] == [[2]]
    assert stack.get(f"/dicomweb/studies/{study}/metadata")[0] == 200


def test_stow_into_a_named_partition_answers_retrieve_urls_in_that_partition(stack: Stack) -> None:
    [ds] = series_from("CT_small.dcm", 1)
    ds.PatientID = "ONE-SITE-2"
    site_base = f"{stack.api}/dicomweb/partitions/{DEFAULT_SITE}"
    answer = DICOMwebClient(url=site_base).store_instances(
        datasets=[ds], study_instance_uid=ds.StudyInstanceUID
    )
    assert answer.RetrieveURL == f"{site_base}/studies/{ds.StudyInstanceUID}"
    [referenced] = answer.ReferencedSOPSequence
    assert referenced.RetrieveURL.startswith(f"{site_base}/studies/{ds.StudyInstanceUID}/series/")
    # Following it works once ingest has indexed the instance
    path = referenced.RetrieveURL.removeprefix(stack.api) + "/metadata"
    wait_for(lambda: stack.get(path)[0] == 200 or None, 90, "the stored instance indexed")
