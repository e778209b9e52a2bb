"""Run inside a private network namespace: the local stack + Orthanc as the hospital PACS pushing a study.

Orthanc binds every interface, so every party runs inside ``unshare -n`` (loopback
only). Usage (what tests/e2e/test_gateway_orthanc.py runs)::

    unshare -n sh -c 'ip link set lo up && exec "$@"' sh python -m tests.helpers.orthanc_push WORKDIR

Prints one JSON object: what Orthanc answered, and what the index says about the study.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from local_cloud.stack import free_port
from tests.helpers import orthanc as pacs
from tests.helpers.dicom_factory import series_from, write_series
from tests.helpers.orthanc import http, listening, ready, wait


def main(work: Path) -> dict[str, Any]:
    ports = {name: free_port() for name in ("moto", "api", "dicom", "orthanc_http", "orthanc_dicom")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
    env["TCP_NODELAY"] = "1"
    stack_log = open(work / "local-stack.log", "wb")  # noqa: SIM115 - lives as long as the process
    stack = subprocess.Popen(
        pacs.local_stack_command(ports, work / "local-run"),
        stdout=stack_log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    config = pacs.write_config(work, ports, "PACS", {"edge": ("EDGE", "127.0.0.1", ports["dicom"])})
    orthanc = pacs.start(config, env)
    orthanc_url = f"http://127.0.0.1:{ports['orthanc_http']}"
    api = f"http://127.0.0.1:{ports['api']}"
    try:
        wait(lambda: http("GET", f"{orthanc_url}/system"), 60, "Orthanc")
        wait(lambda: ready(f"{api}/dicomweb/studies?limit=1"), 90, "the local stack")
        # Orthanc's C-STORE fails with "Connection refused" if it connects before the gateway listens.
        wait(lambda: listening(ports["dicom"]) and listening(ports["moto"]), 90, "the gateway's DICOM port")
        # GIVEN a study of two series stored in the PACS (Orthanc), as a modality would have left it
        ct = series_from("CT_small.dcm", 4)
        mr = series_from("MR_small.dcm", 2, study_uid=ct[0].StudyInstanceUID)
        for ds in ct + mr:
            ds.PatientName, ds.PatientID = "Orthanc^Push", "TEST-4242"
        files = write_series(work / "study", ct + mr)
        for path in files:
            http("POST", f"{orthanc_url}/instances", path.read_bytes())
        [study_id] = http("GET", f"{orthanc_url}/studies")
        # WHEN the PACS pushes it to the gateway by C-STORE, as a hospital configures it
        pushed = http("POST", f"{orthanc_url}/modalities/edge/store", json.dumps(study_id).encode())
        study_uid = str(ct[0].StudyInstanceUID)

        # THEN the index knows the study with both series and all six instances
        def indexed() -> Any:
            found = http("GET", f"{api}/dicomweb/studies?StudyInstanceUID={study_uid}")
            if found and found[0]["00201208"]["Value"][0] == len(files):
                return found[0]
            return None

        study = wait(indexed, 90, "the study in the index")
        return {
            "pushed": pushed,
            "study_uid": study_uid,
            "instances": study["00201208"]["Value"][0],
            "series": study["00201206"]["Value"][0],
            "patient_name": study["00100010"]["Value"][0]["Alphabetic"],
        }
    finally:
        pacs.stop((orthanc, stack))


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
