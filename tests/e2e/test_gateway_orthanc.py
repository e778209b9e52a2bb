"""Orthanc (Debian package) as the hospital PACS pushes a study to the gateway over its REST API.

Orthanc binds every interface, so the local stack, the gateway and Orthanc run together in a
private network namespace (see tests/e2e/orthanc_push.py); this test checks what it reports.
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


def test_orthanc_pushes_a_study_through_the_gateway_into_the_index(tmp_path: Path) -> None:
    require_tool(os.access("/usr/sbin/Orthanc", os.X_OK), "Orthanc (Debian package orthanc)")
    require_tool(namespace_works(), "unshare -n (network namespaces)")
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, "-m", "tests.helpers.orthanc_push", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    OUTPUT.mkdir(exist_ok=True)
    for name in ("orthanc.log", "local-stack.log"):
        if (tmp_path / name).exists():
            (OUTPUT / f"orthanc-push-{name}").write_bytes((tmp_path / name).read_bytes())
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["pushed"]["InstancesCount"] == 6 and report["pushed"]["FailedInstancesCount"] == 0
    assert report["instances"] == 6
    assert report["series"] == 2
    assert report["patient_name"] == "Orthanc^Push"
