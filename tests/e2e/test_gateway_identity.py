"""Identity at the edge over real associations: corrections ship, identical re-sends do not,
odd UIDs never reach a path, one bad spool entry is quarantined and shown by ``status``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Aws
from tests.e2e.conftest import wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
    GatewayFactory,
    SendResult,
    bucket_members,
    dataset_bytes,
    gateway_env,
    member_bytes,
    send_files,
    start_gateway_fixture,
    write_config,
    write_files,
)

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000


def run_status(spool: Path, tmp_path: Path, *extra: str) -> str:
    config = write_config(tmp_path / "status.toml", spool_dir=str(spool), bucket="unused")
    done = subprocess.run(
        [sys.executable, "-m", "edge_gateway", "status", "--config", str(config), *extra],
        capture_output=True, text=True, timeout=60, env=gateway_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def status_json(spool: Path, tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run_status(spool, tmp_path, "--json"))
    return result


def parts_holding(aws: Aws, count: int) -> dict[str, list[str]]:
    def found() -> dict[str, list[str]] | None:
        members = bucket_members(aws.s3, aws.bucket)
        return members if len(members) >= count else None

    return wait_for(found, 30, f"{count} parts in the bucket")


def test_a_corrected_instance_is_shipped_and_an_identical_resend_is_dropped_and_counted(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a series of three instances, shipped
    gateway = start_gateway()
    instances = series_from("CT_small.dcm", 3)
    for ds in instances:
        ds.PatientName = "Wrong^Name"
    files = write_files(tmp_path / "first", instances)
    assert send_files(gateway.port, files).statuses == [SUCCESS] * 3
    [first_key] = parts_holding(aws, 1)

    # WHEN the PACS re-sends the series after fixing PatientName of the first instance only
    instances[0].PatientName = "Right^Name"
    resent = write_files(tmp_path / "again", instances)
    assert send_files(gateway.port, resent).statuses == [SUCCESS] * 3

    # THEN a second part holds the corrected instance alone, with the new bytes
    found = parts_holding(aws, 2)
    [second_key] = [k for k in found if k != first_key]
    assert found[second_key] == [files[0].stem]
    shipped = member_bytes(aws.s3, aws.bucket, second_key, files[0].stem)
    assert shipped.endswith(dataset_bytes(resent[0]))  # the dataset as received, after the gateway's header
    assert b"Right^Name" in shipped
    # AND the two unchanged instances were dropped and counted, the correction counted as a version
    status = status_json(tmp_path / "spool", tmp_path)
    assert status["duplicates_dropped"] == 2
    assert status["versions_shipped"] == 1
    assert Counter(s for v in found.values() for s in v) == {
        files[0].stem: 2,
        files[1].stem: 1,
        files[2].stem: 1,
    }


def test_odd_uids_are_refused_and_a_bad_spool_entry_is_quarantined_without_stalling_others(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a spool left by an older gateway that stored study "0", series "." (a file where a
    # series folder should be: every later series used to stay unshipped)
    spool = tmp_path / "spool"
    (spool / "series" / "0").mkdir(parents=True)
    (spool / "series" / "0" / "1.2.3.4.dcm").write_bytes(b"stray instance")
    gateway = start_gateway(spool_dir=spool)

    # WHEN an instance whose StudyInstanceUID is ".." is sent, then a good series
    [escaping] = series_from("CT_small.dcm", 1)
    escaping.StudyInstanceUID = ".."
    refused = send_files(gateway.port, write_files(tmp_path / "odd", [escaping]))
    good = write_files(tmp_path / "good", series_from("CT_small.dcm", 2))
    assert send_files(gateway.port, good).statuses == [SUCCESS] * 2

    # THEN the odd instance got a failure status and wrote nothing outside series/
    assert refused.statuses and refused.statuses[0] != SUCCESS
    assert sorted(p.name for p in spool.iterdir() if p.is_dir()) == [
        "outbox", "parts", "quarantine", "series", "shipped", "tmp",
    ]  # fmt: skip
    assert not list(spool.glob(f"*/{escaping.SeriesInstanceUID}"))
    # AND the good series ships
    [members] = parts_holding(aws, 1).values()
    assert sorted(members) == sorted(p.stem for p in good)
    # AND `edge-gateway status` shows the quarantined entry with its reason, no UID or PHI
    status = status_json(spool, tmp_path)
    assert status["quarantined"] == 1
    [entry] = status["quarantine"]
    assert entry["reason"] == "a file where a series folder should be"
    assert entry["from"] == "series"
    assert "1.2.3.4" not in json.dumps(entry)
    text = run_status(spool, tmp_path)
    assert "quarantined: 1" in text
    assert f"quarantine/{entry['id']} (from series/): a file where a series folder should be" in text


def test_duplicates_and_replaced_versions_are_counted_across_receiver_processes(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a gateway with 2 receiver processes, and a series sent twice at the same time
    # (two associations: one per process), then its first instance corrected, all while it is open
    gateway = start_gateway(receivers=2, stable_after=3.0)
    instances = series_from("CT_small.dcm", 3)
    files = write_files(tmp_path / "first", instances)
    results: list[SendResult] = []
    senders = [
        threading.Thread(target=lambda: results.append(send_files(gateway.port, files))) for _ in range(2)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    instances[0].PatientName = "Corrected^Name"
    corrected = write_files(tmp_path / "corrected", instances[:1])
    assert send_files(gateway.port, corrected).statuses == [SUCCESS]

    # THEN every copy was acknowledged, and one part ships the three instances, the first corrected
    assert [r.statuses for r in results] == [[SUCCESS] * 3] * 2
    [(key, members)] = parts_holding(aws, 1).items()
    assert sorted(members) == sorted(p.stem for p in files)
    assert member_bytes(aws.s3, aws.bucket, key, files[0].stem).endswith(dataset_bytes(corrected[0]))
    # AND the counters, kept on disk, hold what both processes dropped and replaced
    status = status_json(tmp_path / "spool", tmp_path)
    assert (status["duplicates_dropped"], status["versions_replaced"]) == (3, 1)
