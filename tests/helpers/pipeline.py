"""The whole pipeline from a test: send over a real association, wait for the index."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts

from tests.e2e.conftest import Stack, wait_for

PATIENT_NAME = "00100010"
SERIES_RELATED_INSTANCES = "00201209"
STUDY_RELATED_INSTANCES = "00201208"
STUDY_RELATED_SERIES = "00201206"


def send(port: int, instances: list[Dataset]) -> list[int]:
    ae = AE(ae_title="TESTSCU")
    ae.requested_contexts = StoragePresentationContexts[:120]
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in instances]
    finally:
        assoc.release()


def value(result: dict[str, Any], tag: str) -> Any:
    return result[tag]["Value"][0]


def study_when_complete(stack: Stack, study_uid: str, instances: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status, _, body = stack.get(f"/dicomweb/studies?StudyInstanceUID={study_uid}")
        if status == 200 and value(body[0], STUDY_RELATED_INSTANCES) == instances:
            return dict(body[0])
        return None

    return wait_for(probe, 60, f"{instances} instances of study {study_uid} in the index")
