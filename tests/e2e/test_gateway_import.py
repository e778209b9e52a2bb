"""``edge-gateway import DIR``: a folder of existing files goes through the spool -> series -> upload path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Aws
from tests.dicom_factory import series_from
from tests.e2e.conftest import wait_for
from tests.e2e.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
    GatewayFactory,
    bucket_members,
    gateway_env,
    member_bytes,
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
