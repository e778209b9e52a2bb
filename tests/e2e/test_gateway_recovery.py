"""``kill -9`` of a gateway process at chosen moments, then a restart: nothing acknowledged is lost.

The gateway runs as ``python -m edge_gateway run`` against the local stack's S3
(moto server + ingest), so the index counts are checked too.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from local_cloud.stack import free_port
from tests.e2e.conftest import OUTPUT, Stack, wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (
    GatewayProcess,
    bucket_members,
    in_both_modes,
    listening,
    offline_gateway_config,
    send_files,
    spawned_receivers,
    write_config,
    write_files,
)

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000


@pytest.fixture
def gateway(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    port = free_port()
    spool = tmp_path / "spool"
    config = write_config(
        tmp_path / "gateway.toml",
        host="127.0.0.1",
        port=port,
        spool_dir=str(spool),
        bucket=stack.bucket,
        region="us-east-1",
        endpoint_url=stack.moto,
        stable_after=1.0,
        max_part_instances=10,
        upload_backoff_base=0.2,
        upload_backoff_cap=2.0,
        gateway_id="kill-test",
        fast_path=getattr(request, "param", True),
    )
    OUTPUT.mkdir(exist_ok=True)
    log = OUTPUT / f"gateway-{request.node.name}.log"
    log.unlink(missing_ok=True)
    process = GatewayProcess(config, log, port)
    process.start()
    yield process
    process.stop()


def spool_of(gateway: GatewayProcess) -> Path:
    return gateway.config.parent / "spool"


def shipped_exactly_once(stack: Stack, study_uid: str, expected: set[str]) -> dict[str, list[str]]:
    """Wait until every expected instance is in S3; return key -> members."""

    def probe() -> dict[str, list[str]] | None:
        found = bucket_members(stack.s3(), stack.bucket, f"incoming/{study_uid}/")
        return found if {s for sops in found.values() for s in sops} >= expected else None

    found = wait_for(probe, 90, "every acknowledged instance in S3")
    counts = Counter(s for sops in found.values() for s in sops)
    doubled = {sop: n for sop, n in counts.items() if n > 1}
    assert doubled == {}, f"instances shipped in more than one part: {doubled}"
    return found


def index_count(stack: Stack, study_uid: str, series_uid: str, expected: int) -> None:
    def probe() -> bool:
        status, _, summary = stack.get(f"/api/studies/{study_uid}/series/{series_uid}")
        return status == 200 and summary["instance_count"] == expected

    wait_for(probe, 90, f"{expected} instances of the series in the index")


def kill_after(count: int, gateway: GatewayProcess) -> Callable[[int, int], None]:
    def after_each(index: int, status: int) -> None:
        if index + 1 == count:
            gateway.kill9()

    return after_each


@in_both_modes("gateway")  # killed while an association is open: the C-STORE path's ack after fsync
def test_kill_mid_association_then_the_pacs_resends_the_study(
    stack: Stack, gateway: GatewayProcess, tmp_path: Path
) -> None:
    # GIVEN a 25-instance series, and a gateway killed (SIGKILL) right after acknowledging the 8th
    instances = series_from("CT_small.dcm", 25)
    files = write_files(tmp_path / "series", instances)
    result = send_files(gateway.port, files, after_each=kill_after(8, gateway))
    acknowledged = {files[i].stem for i, status in enumerate(result.statuses) if status == SUCCESS}
    assert len(acknowledged) == 8
    assert result.lost

    # WHEN the gateway restarts and the PACS re-sends the whole series (as it does after a failure)
    gateway.start()
    again = send_files(gateway.port, files)
    assert again.statuses == [SUCCESS] * 25

    # THEN every instance is in S3 exactly once and the index counts 25
    study_uid, series_uid = instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID
    shipped_exactly_once(stack, study_uid, {p.stem for p in files})
    index_count(stack, study_uid, series_uid, 25)


@pytest.mark.parametrize("moment", ["parts", "outbox"])
def test_kill_while_zipping_or_uploading_loses_nothing(
    stack: Stack, gateway: GatewayProcess, tmp_path: Path, moment: str
) -> None:
    # GIVEN a 30-instance series of 0.5 MB images (parts of at most ~10 instances)
    instances = series_from("CT_small.dcm", 30)
    for ds in instances:
        ds.Rows = ds.Columns = 512
        ds.PixelData = os.urandom(512 * 512 * 2)
    files = write_files(tmp_path / "series", instances)
    spool = spool_of(gateway)
    watched = spool / moment
    killed = threading.Event()

    def watch() -> None:
        # kill -9 as soon as a part is closed (zip pending / running) or zipped (upload pending /
        # running): poll every 2 ms, a 5 MB part takes tens of ms to zip and fsync
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(watched.iterdir()):
                gateway.kill9()
                killed.set()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = send_files(gateway.port, files)
    watcher.join()
    acknowledged = {files[i].stem for i, status in enumerate(result.statuses) if status == SUCCESS}
    assert killed.is_set()

    # WHEN the gateway restarts, and the PACS re-sends what was not acknowledged
    gateway.start()
    remaining = [p for p in files if p.stem not in acknowledged]
    if remaining:
        assert send_files(gateway.port, remaining).statuses == [SUCCESS] * len(remaining)

    # THEN every instance reaches S3 exactly once, and the index counts 30
    study_uid, series_uid = instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID
    shipped_exactly_once(stack, study_uid, {p.stem for p in files})
    index_count(stack, study_uid, series_uid, 30)


def test_kill9_of_the_coordinator_takes_its_receiver_processes_along(tmp_path: Path) -> None:
    # GIVEN a gateway process with 3 receivers (the coordinator and 2 children) on one port
    port = free_port()
    config = offline_gateway_config(tmp_path, port, receivers=3)
    gateway = GatewayProcess(config, tmp_path / "gateway.log", port)
    gateway.start()
    assert gateway.process is not None
    coordinator = gateway.process.pid

    def receivers() -> list[int] | None:
        found = spawned_receivers(coordinator)
        return found if len(found) == 2 else None

    children = wait_for(receivers, 60, "2 receiver processes")

    # WHEN the coordinator is killed with SIGKILL
    gateway.kill9()

    # THEN no receiver is left behind holding the port, and a restart listens again
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 30, "receivers to exit")
    wait_for(lambda: not listening(port), 30, "the port to be free")
    gateway.start()
    assert listening(port)
    gateway.stop()
