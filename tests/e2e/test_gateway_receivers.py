"""Several receiver processes behind one port (``receivers = N``): same guarantees, one coordinator."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from local_cloud.stack import free_port
from tests.conftest import Aws
from tests.e2e.conftest import wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
    GatewayFactory,
    SendResult,
    bucket_members,
    gateway_env,
    listening,
    offline_gateway_config,
    send_files,
    spawned_receivers,
    start_gateway_fixture,
    write_files,
)
from tests.helpers.processes import stop_process

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000


def test_three_receiver_processes_four_senders_two_interleaved_series(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a gateway with 3 receiver processes on one port, and two series of 12 instances
    # A quiet period that CPU contention cannot fake: a 1 s gap between two instances of a
    # series under load split it into two parts (each shipped, but the test asks for one).
    gateway = start_gateway(receivers=3, stable_after=5.0)
    assert len(set(gateway.status()["receiver_pids"])) == 3
    first, second = series_from("CT_small.dcm", 12), series_from("MR_small.dcm", 12)
    files = write_files(tmp_path / "a", first) + write_files(tmp_path / "b", second)

    # WHEN 4 senders send interleaved shares of both series at the same time
    results: list[SendResult] = []

    def sender(share: list[Path]) -> None:
        results.append(send_files(gateway.port, share))

    threads = [threading.Thread(target=sender, args=(files[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN every instance is acknowledged, and each series is shipped as one part holding all of it
    assert sorted(s for r in results for s in r.statuses) == [SUCCESS] * 24

    def shipped() -> dict[str, list[str]] | None:
        found = bucket_members(aws.s3, aws.bucket)
        return found if sum(len(v) for v in found.values()) >= 24 else None

    found = wait_for(shipped, 30, "both series in the bucket")
    assert len(found) == 2
    by_series = {key.split("/")[2]: set(sops) for key, sops in found.items()}
    assert by_series == {
        first[0].SeriesInstanceUID: {ds.SOPInstanceUID for ds in first},
        second[0].SeriesInstanceUID: {ds.SOPInstanceUID for ds in second},
    }
    assert set(Counter(s for v in found.values() for s in v).values()) == {1}


def _server_side_owner(gateway_port: int, client_port: int, pids: list[int]) -> int | None:
    """The PID holding the gateway's end of the TCP connection from ``client_port`` (Linux /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local_port, remote_port) == (gateway_port, client_port):
            inode = fields[9]
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    return None


def test_associations_are_spread_evenly_over_the_processes(start_gateway: GatewayFactory) -> None:
    # GIVEN a gateway with 2 processes (the coordinator and one receiver)
    gateway = start_gateway(receivers=2)
    pids = gateway.status()["receiver_pids"]
    [coordinator_pid, receiver_pid] = pids
    assert coordinator_pid == os.getpid()  # the coordinator runs in this test process
    # WHEN 4 associations are open at the same time
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    associations = [ae.associate("127.0.0.1", gateway.port, ae_title="EDGE") for _ in range(4)]
    try:
        assert all(a.is_established for a in associations)
        assert all(a.send_c_echo().Status == SUCCESS for a in associations)
        owners = []
        for assoc in associations:
            sock = assoc.dul.socket
            assert sock is not None and sock.socket is not None
            owners.append(_server_side_owner(gateway.port, sock.socket.getsockname()[1], pids))
    finally:
        for assoc in associations:
            assoc.release()
    # THEN each process serves two of them (the kernel's SO_REUSEPORT hash often put 3 or 4 on one)
    assert Counter(owners) == {coordinator_pid: 2, receiver_pid: 2}


def test_ctrl_c_while_a_receiver_process_starts_neither_kills_it_nor_prints_a_traceback(
    tmp_path: Path,
) -> None:
    # GIVEN a gateway process with 2 processes, just started (a fresh interpreter: multiprocessing
    # starts its resource tracker with the first receiver, which unblocks SIGINT in the caller)
    port = free_port()
    config = offline_gateway_config(tmp_path, port, receivers=2)
    log = tmp_path / "gateway.log"
    with open(log, "ab") as out:
        command = [sys.executable, "-m", "edge_gateway", "run", "--config", str(config)]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    try:
        # WHEN Ctrl-C reaches its receiver process the moment it exists (it imports for most of a
        # second; a terminal signals its whole process group, the coordinator decides)
        found: list[int] = []
        while not found and process.poll() is None:
            found = spawned_receivers(process.pid)
        [receiver_pid] = found
        os.kill(receiver_pid, signal.SIGINT)
        # THEN that same process serves its share of the associations once it is ready
        wait_for(lambda: listening(port), 60, "the gateway to listen")
        ae = AE(ae_title="PACS")
        ae.add_requested_context(Verification)
        associations = [ae.associate("127.0.0.1", port, ae_title="EDGE") for _ in range(2)]
        try:
            assert all(a.is_established and a.send_c_echo().Status == SUCCESS for a in associations)
            owners = []
            for assoc in associations:
                sock = assoc.dul.socket
                assert sock is not None and sock.socket is not None
                client_port = sock.socket.getsockname()[1]
                owners.append(_server_side_owner(port, client_port, [process.pid, receiver_pid]))
        finally:
            for assoc in associations:
                assoc.release()
        assert sorted(owners) == sorted([process.pid, receiver_pid])
        assert spawned_receivers(process.pid) == [receiver_pid]
    finally:
        stop_process(process)
    # AND nothing was printed for it: no traceback, no replaced receiver
    text = log.read_text()
    assert "Traceback" not in text and "starting a new one" not in text


def test_a_receiver_process_that_dies_is_replaced(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = start_gateway(receivers=2)
    [_, child] = gateway.status()["receiver_pids"]
    os.kill(child, signal.SIGKILL)

    def replaced() -> bool:
        pids = gateway.status()["receiver_pids"]
        return len(pids) == 2 and child not in pids

    wait_for(replaced, 30, "a new receiver process")
    files = write_files(tmp_path / "a", series_from("CT_small.dcm", 4))
    assert send_files(gateway.port, files).statuses == [SUCCESS] * 4
