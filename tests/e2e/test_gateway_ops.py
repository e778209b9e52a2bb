"""Operations: ``edge-gateway status`` from another process, JSON logs without PHI, config errors at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local_cloud.stack import free_port
from tests.e2e.conftest import wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (
    GatewayProcess,
    gateway_env,
    in_both_modes,
    offline_gateway_config,
    send_files,
    spawned_receivers,
    write_config,
    write_files,
)

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000
PATIENT_NAME, PATIENT_ID = "Confidential^Patient", "PID-SECRET-4711"


def status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_gateway", "status", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=gateway_env(),
        check=False,
    )


@in_both_modes("fast_path")  # the logs without PHI include those of the C-STORE path (and pynetdicom's)
def test_status_and_json_logs_while_s3_is_unreachable(tmp_path: Path, fast_path: bool) -> None:
    # GIVEN a gateway process logging JSON, whose S3 endpoint is a closed port
    port = free_port()
    config = offline_gateway_config(
        tmp_path,
        port,
        bucket="unreachable",
        region="us-east-1",
        stable_after=0.5,
        upload_backoff_base=0.2,
        upload_backoff_cap=1.0,
        log_format="json",
        log_level="DEBUG",
        fast_path=fast_path,
    )
    log = tmp_path / "gateway.log"
    gateway = GatewayProcess(config, log, port)
    gateway.start()
    try:
        # WHEN a series with a patient name and ID is sent, and another one stays open
        first = series_from("CT_small.dcm", 3)
        for ds in first:
            ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        assert send_files(port, write_files(tmp_path / "a", first)).statuses == [SUCCESS] * 3

        def reported() -> dict[str, Any] | None:
            done = status(config, "--json")
            assert done.returncode == 0, done.stderr
            result: dict[str, Any] = json.loads(done.stdout)
            return result if result["outbox_parts"] == 1 and result.get("last_error") else None

        # THEN `edge-gateway status` (another process) shows the waiting part and the last error
        result = wait_for(reported, 30, "status to show the outbox part and the upload error")
        assert result["open_series"] == 0
        assert result["spool_bytes"] > 0
        assert result["uploaded_parts"] == 0
        assert "upload of part" in result["last_error"]
        text = status(config)
        assert text.returncode == 0
        assert "outbox_parts: 1" in text.stdout
        # AND it names the processes serving the port and counts their associations
        assert result["receiver_pids"][0] == result["pid"]
        assert sorted(result["receiver_pids"][1:]) == sorted(spawned_receivers(result["pid"]))
        counted = {"established", "negotiating", "negotiating_unlisted", "refused"}
        assert set(result["associations"]) == counted
        assert f"receiver_pids: {result['pid']}" in text.stdout
        assert "associations: established " in text.stdout
    finally:
        gateway.stop()

    # AND every log line is a JSON object, and none carries the patient's name or ID
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["level"] == "WARNING" and "upload of part" in e["message"] for e in entries)
    for secret in (PATIENT_NAME, PATIENT_ID, "Confidential", "SECRET"):
        assert secret not in log.read_text()


def test_invalid_config_is_refused_at_start_with_a_clear_message(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        port=70000,
        bucket="b",
        ae_title="MUCH-TOO-LONG-AE-TITLE",
        allowed_peer_networks=["not-a-network"],
        tls_cert="/nonexistent.pem",
    )
    done = subprocess.run(
        [sys.executable, "-m", "edge_gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=gateway_env(),
        check=False,
    )
    assert done.returncode == 2
    for setting in ("port", "ae_title", "allowed_peer_networks", "tls_cert and tls_key", "tls_cert:"):
        assert setting in done.stderr
