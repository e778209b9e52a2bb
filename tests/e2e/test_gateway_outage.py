"""S3 unreachable: instances keep being accepted, parts wait in the outbox, uploads resume when S3 returns.

The outage is a moto server stopped and started again on the same port. Production
backoff is 1 s doubling up to 300 s; the test uses 0.2 s up to 1 s so a few seconds of
outage go through several backoff rounds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_gateway.config import GatewayConfig
from edge_gateway.gateway import Gateway
from edge_gateway.uploader import backoff_delay
from tests.e2e.conftest import OUTPUT, wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import MotoServer, bucket_members, outbox_entries, send_files, write_files

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    OUTPUT.mkdir(exist_ok=True)
    server = MotoServer(OUTPUT / "moto-outage.log", "outage-test")
    server.start()
    yield server
    server.stop()


def test_parts_wait_in_the_outbox_while_s3_is_down_and_resume_with_backoff(
    moto: MotoServer, tmp_path: Path
) -> None:
    # GIVEN a gateway uploading to a moto server, and that server going away
    config = GatewayConfig(
        host="127.0.0.1",
        port=0,
        bucket=moto.bucket,
        region="us-east-1",
        endpoint_url=moto.url,
        spool_dir=tmp_path / "spool",
        stable_after=0.5,
        upload_backoff_base=0.2,
        upload_backoff_cap=1.0,
    ).validate()
    gateway = Gateway(config)
    gateway.start()
    try:
        moto.stop()
        first, second = series_from("CT_small.dcm", 5), series_from("MR_small.dcm", 4)
        first_files = write_files(tmp_path / "first", first)
        second_files = write_files(tmp_path / "second", second)

        # WHEN series keep arriving during the outage
        assert send_files(gateway.port, first_files).statuses == [SUCCESS] * 5
        wait_for(lambda: gateway.uploader.stats.last_error, 30, "a failed upload")
        assert send_files(gateway.port, second_files).statuses == [SUCCESS] * 4

        # THEN both parts wait in the outbox on disk and keep being retried with backoff
        wait_for(lambda: outbox_entries(config.spool_dir) == 2, 30, "two parts in the outbox")
        wait_for(
            lambda: (
                all(r.failures >= 3 for r in gateway.uploader.stats.retrying.values())
                and len(gateway.uploader.stats.retrying) == 2
            ),
            30,
            "three failed attempts per part",
        )
        assert gateway.uploader.stats.uploaded_parts == 0
        assert "failed" in gateway.status()["last_error"]

        # WHEN S3 comes back on the same address
        moto.start()

        # THEN both parts are uploaded (within the backoff cap plus a tick), nothing lost or doubled
        def shipped() -> dict[str, list[str]] | None:
            found = bucket_members(moto.s3(), moto.bucket)
            return found if sum(len(v) for v in found.values()) >= 9 else None

        found = wait_for(shipped, 30, "the outbox to drain")
        counts = Counter(sop for sops in found.values() for sop in sops)
        assert set(counts) == {p.stem for p in first_files + second_files}
        assert set(counts.values()) == {1}
        wait_for(lambda: outbox_entries(config.spool_dir) == 0, 10, "the outbox to be empty")
        assert gateway.uploader.stats.retrying == {}
    finally:
        gateway.stop()


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    for failures in range(1, 12):
        ceiling = min(1.0, 0.2 * 2**failures)
        delays = [backoff_delay(failures, 0.2, 1.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150  # jittered, not a fixed schedule
        assert max(delays) > ceiling * 0.8
