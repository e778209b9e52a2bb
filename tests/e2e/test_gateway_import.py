"""``edge-gateway import DIR``: a folder of existing files goes through the spool -> series -> upload path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Aws
from tests.e2e.conftest import wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
    GatewayFactory,
    bucket_members,
    gateway_env,
    member_bytes,
    send_files,
    start_gateway_fixture,
    write_config,
    write_files,
)

pytestmark = pytest.mark.e2e


def test_import_a_folder_then_the_gateway_ships_it(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN an archive folder: two series in nested folders, a copy of one file, and a non-DICOM file
    archive = tmp_path / "archive"
    ct = write_files(archive / "2019" / "ct", series_from("CT_small.dcm", 6))
    mr = write_files(archive / "2020" / "mr", series_from("MR_small_RLE.dcm", 3))
    shutil.copy(ct[0], archive / "copy-of-first.dcm")
    (archive / "README.txt").write_text("not DICOM")
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "gw.toml", bucket=aws.bucket, spool_dir=str(spool))

    # WHEN it is imported (no gateway running)
    done = subprocess.run(
        [sys.executable, "-m", "edge_gateway", "import", "--config", str(config), str(archive)],
        capture_output=True, text=True, timeout=120, env=gateway_env(), check=False,
    )  # fmt: skip

    # THEN every instance is spooled once, the rest is reported, with progress shown
    assert done.returncode == 0, done.stderr
    assert "stored 9 instances" in done.stdout
    assert "1 already in an open series" in done.stdout
    assert "skipped 1: not DICOM Part 10" in done.stdout
    assert "10/11 files" in done.stderr or "11/11 files" in done.stderr
    assert len(list(spool.glob("series/*/*/*.dcm"))) == 9

    # AND the gateway, once started on that spool, ships both series with the files' bytes unchanged
    start_gateway(spool_dir=spool)

    def shipped() -> dict[str, list[str]] | None:
        found = bucket_members(aws.s3, aws.bucket)
        return found if sum(len(v) for v in found.values()) >= 9 else None

    found = wait_for(shipped, 30, "the imported series in the bucket")
    counts = Counter(s for v in found.values() for s in v)
    assert set(counts) == {p.stem for p in ct + mr}
    assert set(counts.values()) == {1}
    [key] = [k for k, v in found.items() if mr[0].stem in v]
    assert member_bytes(aws.s3, aws.bucket, key, mr[0].stem) == mr[0].read_bytes()  # the file, as it was
    assert archive.joinpath("README.txt").exists()  # nothing deleted from the archive


def import_folder(config: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_gateway", "import", "--config", str(config), str(folder)],
        capture_output=True, text=True, timeout=120, env=gateway_env(), check=False,
    )  # fmt: skip


def test_reimport_drops_identical_files_ships_changed_ones_and_reports_odd_uids(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a folder imported and shipped by a running gateway
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "gw.toml", bucket=aws.bucket, spool_dir=str(spool))
    instances = series_from("CT_small.dcm", 3)
    files = write_files(tmp_path / "archive", instances)
    start_gateway(spool_dir=spool)
    assert import_folder(config, tmp_path / "archive").returncode == 0

    def parts(count: int) -> dict[str, list[str]]:
        def found() -> dict[str, list[str]] | None:
            members = bucket_members(aws.s3, aws.bucket)
            return members if len(members) >= count else None

        return wait_for(found, 30, f"{count} parts in the bucket")

    [first_key] = parts(1)

    # WHEN the folder is imported again with one file changed (PatientName corrected) and one
    # file whose StudyInstanceUID is ".." (it would name a path outside the spool)
    instances[1].PatientName = "Corrected^Name"
    write_files(tmp_path / "archive", [instances[1]])
    [odd] = series_from("CT_small.dcm", 1)
    odd.StudyInstanceUID = ".."
    [odd_file] = write_files(tmp_path / "archive" / "odd", [odd])
    done = import_folder(config, tmp_path / "archive")

    # THEN the unchanged files are dropped and counted, the changed one stored, the odd one reported
    assert done.returncode == 1, done.stderr
    assert "stored 1 instances" in done.stdout
    assert "2 already shipped with the same bytes (dropped)" in done.stdout
    assert "1 changed since spooled or shipped (stored as a new version)" in done.stdout
    assert f"refused {odd_file}: StudyInstanceUID: UID is not dot-separated digits" in done.stdout
    # AND the gateway ships the changed file alone, as it is on disk
    found = parts(2)
    [second_key] = [k for k in found if k != first_key]
    assert found[second_key] == [files[1].stem]
    assert member_bytes(aws.s3, aws.bucket, second_key, files[1].stem) == files[1].read_bytes()
    assert not (spool / odd.SeriesInstanceUID).exists()  # nothing written outside series/


def test_files_already_received_by_c_store_are_dropped_when_imported(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a series received by C-STORE and shipped (the gateway wrote its own file meta)
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "gw.toml", bucket=aws.bucket, spool_dir=str(spool))
    files = write_files(tmp_path / "archive", series_from("CT_small.dcm", 3))
    gateway = start_gateway(spool_dir=spool)
    assert send_files(gateway.port, files).statuses == [0x0000] * 3
    [key] = wait_for(lambda: bucket_members(aws.s3, aws.bucket), 30, "the received series shipped")
    assert member_bytes(aws.s3, aws.bucket, key, files[0].stem) != files[0].read_bytes()  # other meta

    # WHEN the archive's copies of the same files are imported
    done = import_folder(config, tmp_path / "archive")

    # THEN they are the same data sets: dropped, nothing new stored or shipped
    assert done.returncode == 0, done.stderr
    assert "3 already shipped with the same bytes (dropped)" in done.stdout
    assert done.stdout.startswith("stored 0 instances")
    assert not list(spool.glob("series/*/*/*.dcm"))
