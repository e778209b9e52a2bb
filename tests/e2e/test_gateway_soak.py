"""Short soak of the gateway's DIMSE path (bench/gateway_soak.py, 250 instances): dcmtk storescu,
pynetdicom and Orthanc at once under two CPU hogs, associations released and aborted at random
(Orthanc's by SIGKILL mid-push, then a restart and the batch pushed again). Runs once per C-STORE
path (fast path, stock pynetdicom): this is the test of the protocol under load.

Runs in a private network namespace (Orthanc binds every interface). The long form
(5,000 instances) is ``bench/gateway_soak.py --instances 5000``; figures in the README.
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
from tests.helpers.gateway_helpers import in_both_modes
from tests.helpers.namespaces import namespace_works

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@in_both_modes("fast_path")
def test_soak_every_acknowledged_instance_once_in_s3_and_index_no_protocol_error(
    tmp_path: Path, fast_path: bool
) -> None:
    require_tool(os.access("/usr/sbin/Orthanc", os.X_OK), "Orthanc (Debian package orthanc)")
    require_tool(os.access("/usr/bin/storescu", os.X_OK), "dcmtk storescu")
    require_tool(namespace_works(), "unshare -n (network namespaces)")
    namespace = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    soak = ["-m", "bench.gateway_soak", "--instances", "250", "--batch", "10", "--work", str(tmp_path)]
    soak += [] if fast_path else ["--stock"]
    command = [*namespace, sys.executable, *soak]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, check=False)
    OUTPUT.mkdir(exist_ok=True)
    mode = "fast" if fast_path else "stock"
    for name in ("orthanc.log", "local-stack.log", "gateway.log"):
        if (tmp_path / name).exists():
            (OUTPUT / f"soak-{mode}-{name}").write_bytes((tmp_path / name).read_bytes())
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert report["acknowledged"] >= 150 and report["cpu_hogs"] == 2
    assert report["gateway"] == ("fast path" if fast_path else "stock pynetdicom")
    assert report["aborted_associations"] >= 1 and report["associations"] >= 20
    # Orthanc was killed mid-push at least once, and its re-pushed batches all answered 0x0000
    assert report["orthanc_killed"] >= 1 and report["streams"]["orthanc"]["aborted"] >= 1
    assert report["streams"]["orthanc"]["acknowledged"] == 50
    assert report["missing_in_s3"] == report["duplicated_in_s3"] == 0
    assert report["missing_in_index"] == report["duplicated_in_index"] == 0
    assert report["protocol_errors"] == []
