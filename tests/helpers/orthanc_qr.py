"""Run inside a private network namespace: Orthanc as storage commitment SCU and Q/R SCU of the gateway.

Orthanc binds every interface, so every party runs inside ``unshare -n`` (loopback
only). Usage (what tests/e2e/test_gateway_orthanc_qr.py runs)::

    unshare -n sh -c 'ip link set lo up && exec "$@"' sh python -m tests.helpers.orthanc_qr WORKDIR

1. Orthanc pushes a study to the gateway with ``StorageCommitment: true``; the gateway
   ships it, the stand-in indexes it, the gateway sends the N-EVENT-REPORT; Orthanc's
   ``/storage-commitment/{transaction}`` then says Success.
2. The study is deleted from Orthanc; Orthanc finds it on the gateway with
   ``/modalities/edge/query`` (C-FIND) and pulls it back with ``/queries/{id}/retrieve``
   (C-MOVE to itself).

Prints one JSON object with what Orthanc reported at each step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from local_cloud.stack import LocalCloudConfig, free_port
from tests.helpers import orthanc as pacs
from tests.helpers.dicom_factory import series_from, write_series
from tests.helpers.orthanc import http, ready, wait

AWS_LOCAL = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _gateway_config(work: Path, port: int, moto: int, orthanc_dicom: int) -> Path:
    lines = [
        "[gateway]",
        'host = "127.0.0.1"',
        f"port = {port}",
        'ae_title = "QREDGE"',
        f'spool_dir = "{work / "qr-spool"}"',
        f'bucket = "{LocalCloudConfig().bucket}"',
        'region = "us-east-1"',
        f'endpoint_url = "http://127.0.0.1:{moto}"',
        'gateway_id = "orthanc-edge"',
        f'table_name = "{LocalCloudConfig().table}"',
        "stable_after = 1.0",
        f'known_aets = ["ORTHANC=127.0.0.1:{orthanc_dicom}"]',
        'dimse_permissions = ["ORTHANC: find get commit move=ORTHANC"]',
    ]
    path = work / "qr-gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(work: Path) -> dict[str, Any]:
    ports = {name: free_port() for name in ("moto", "api", "dicom", "qr", "orthanc_http", "orthanc_dicom")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
    env["TCP_NODELAY"] = "1"
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], log: str, extra: dict[str, str] | None = None) -> None:
        handle = open(work / log, "wb")  # noqa: SIM115 - lives as long as the process
        processes.append(
            subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**env, **(extra or {})})
        )

    start(pacs.local_stack_command(ports, work / "local-run"), "local-stack.log")
    config = pacs.write_config(work, ports, "ORTHANC", {"edge": ("QREDGE", "127.0.0.1", ports["qr"])})
    start([pacs.ORTHANC, str(config)], "orthanc.log")
    orthanc = f"http://127.0.0.1:{ports['orthanc_http']}"
    api = f"http://127.0.0.1:{ports['api']}"
    report: dict[str, Any] = {}
    try:
        wait(lambda: http("GET", f"{orthanc}/system"), 60, "Orthanc")
        wait(lambda: ready(f"{api}/dicomweb/studies?limit=1"), 90, "the local stack")
        start(
            [sys.executable, "-m", "edge_gateway", "run", "--config",
             str(_gateway_config(work, ports["qr"], ports["moto"], ports["orthanc_dicom"]))],
            "qr-gateway.log",
            AWS_LOCAL,
        )  # fmt: skip
        # C-ECHO from Orthanc succeeds once the gateway listens (an HTTP error is retried by wait)
        wait(lambda: http("POST", f"{orthanc}/modalities/edge/echo", b"{}") is not None, 60, "the gateway")

        # 1. Orthanc stores a study on the gateway and asks for storage commitment
        series = series_from("CT_small.dcm", 3)
        for ds in series:
            ds.PatientName, ds.PatientID = "Orthanc^Prior", "ORTH-QR-1"
        files = write_series(work / "study", series)
        for path in files:
            http("POST", f"{orthanc}/instances", path.read_bytes())
        [study_id] = http("GET", f"{orthanc}/studies")
        pushed = http(
            "POST",
            f"{orthanc}/modalities/edge/store",
            json.dumps({"Resources": [study_id], "StorageCommitment": True, "Synchronous": True}).encode(),
        )
        report["pushed"] = pushed
        transaction = pushed.get("StorageCommitmentTransactionUID", "")

        def committed() -> Any:
            state = http("GET", f"{orthanc}/storage-commitment/{transaction}")
            return state if state and state.get("Status") != "Pending" else None

        report["commitment"] = wait(committed, 120, "the storage commitment report")

        # 2. The study leaves Orthanc; Orthanc finds it on the gateway and pulls it back
        http("DELETE", f"{orthanc}/studies/{study_id}")
        query = http(
            "POST",
            f"{orthanc}/modalities/edge/query",
            json.dumps(
                {"Level": "Study", "Query": {"PatientID": "ORTH-QR-1", "PatientName": "", "StudyDate": ""}}
            ).encode(),
        )
        answers = http("GET", f"{orthanc}/queries/{query['ID']}/answers?expand")
        report["answers"] = [
            {tag: value.get("Value") for tag, value in answer.items()} for answer in answers or []
        ]
        report["retrieve"] = http(
            "POST",
            f"{orthanc}/queries/{query['ID']}/retrieve",
            json.dumps({"TargetAet": "ORTHANC", "Synchronous": True}).encode(),
        )
        report["instances_back"] = sorted(
            http("GET", f"{orthanc}/instances/{i}/simplified-tags")["SOPInstanceUID"]
            for i in http("GET", f"{orthanc}/instances")
        )
        report["sent"] = sorted(str(ds.SOPInstanceUID) for ds in series)
        return report
    finally:
        pacs.stop(reversed(processes))


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
