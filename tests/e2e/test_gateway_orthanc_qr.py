"""Orthanc (Debian package) as storage commitment SCU and Q/R SCU of the gateway, through its REST API.

Orthanc binds every interface, so the local stack, the gateway and Orthanc run together in a
private network namespace (see tests/e2e/orthanc_qr.py); this test checks what it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.e2e.conftest import OUTPUT
from tests.helpers.namespaces import REPO, namespace_works

pytestmark = pytest.mark.e2e


def test_orthanc_commits_finds_and_pulls_back_a_study(tmp_path: Path) -> None:
    require_tool(os.access("/usr/sbin/Orthanc", os.X_OK), "Orthanc (Debian package orthanc)")
    require_tool(namespace_works(), "unshare -n (network namespaces)")
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, "-m", "tests.helpers.orthanc_qr", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=REPO, check=False)
    OUTPUT.mkdir(exist_ok=True)
    for name in ("orthanc.log", "qr-gateway.log", "local-stack.log"):
        if (tmp_path / name).exists():
            (OUTPUT / f"orthanc-qr-{name}").write_bytes((tmp_path / name).read_bytes())
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Storage commitment: Orthanc's N-ACTION, then our N-EVENT-REPORT once S3 and the index hold all three
    assert report["pushed"]["InstancesCount"] == 3 and report["pushed"]["FailedInstancesCount"] == 0
    assert report["commitment"]["Status"] == "Success"
    assert sorted(s["SOPInstanceUID"] for s in report["commitment"]["Success"]) == report["sent"]
    assert report["commitment"]["Failures"] == []
    # C-FIND from Orthanc's REST API finds the study; C-MOVE brings every instance back
    [answer] = report["answers"]
    assert answer["0010,0010"] == "Orthanc^Prior"
    assert answer["0008,0054"] == "QREDGE"
    assert report["instances_back"] == report["sent"]
