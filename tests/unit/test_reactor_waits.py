"""pynetdicom with the gateway's reactor waits: exact PDU reads, stock behaviour outside the two loops,
and real associations (acceptor patched, requestor stock) in one process."""

from __future__ import annotations

import socket
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pytest
from pynetdicom import AE, association, dul, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket

from edge_gateway import pynetdicom_fast_path, reactor_waits
from tests.helpers.dicom_factory import series_from


@pytest.fixture(autouse=True)
def installed() -> None:
    assert pynetdicom_fast_path.install()


class _Holder:
    """What ``_recv`` needs of an AssociationSocket: its ``socket``."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def test_recv_returns_exactly_the_pdu_across_many_segments() -> None:
    # GIVEN 3 MB arriving in uneven pieces (more than one receive chunk)
    left, right = socket.socketpair()
    payload = bytes(range(256)) * (3 * 4096)

    def send() -> None:
        for start in range(0, len(payload), 70001):
            left.sendall(payload[start : start + 70001])

    sender = threading.Thread(target=send)
    sender.start()
    # WHEN the gateway's read asks for exactly that length
    got = reactor_waits._recv(_Holder(right), len(payload))  # type: ignore[arg-type]
    sender.join()
    # THEN it returns those bytes, no more, no fewer
    assert got == payload
    left.close()
    right.close()


def test_recv_of_a_lying_length_returns_what_arrived_without_allocating_it() -> None:
    # GIVEN a peer that announces a 4 GB PDU, sends 10 bytes and hangs up
    left, right = socket.socketpair()
    left.sendall(b"0123456789")
    left.close()
    # WHEN the gateway reads the announced length
    got = reactor_waits._recv(_Holder(right), 4 * 1024**3)  # type: ignore[arg-type]
    # THEN it gets the 10 bytes (pynetdicom then reports the short PDU) and memory stays bounded
    assert bytes(got) == b"0123456789"
    assert len(got) == 10
    right.close()


def test_sleep_outside_the_reactor_loops_is_a_real_sleep() -> None:
    started = time.monotonic()
    vars(dul)["time"].sleep(0.05)
    vars(association)["time"].sleep(0.05)
    assert time.monotonic() - started >= 0.1
    assert vars(dul)["time"].monotonic() > 0  # every other function is the real time module's


def _store(received: list[bytes]) -> Any:
    def handler(event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        received.append(cast(BytesIO, request.DataSet).getvalue())
        return 0x0000

    return handler


def test_acceptor_and_requestor_in_one_patched_process(tmp_path: Path) -> None:
    # GIVEN an SCP (acceptor, event-driven waits) and an SCU (requestor, stock) in this process
    received: list[bytes] = []
    scp = AE(ae_title="EDGE")
    scp.add_supported_context(Verification)
    scp.add_supported_context(CTImageStorage)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, _store(received))]
    )
    assert server is not None
    port = server.server_address[1]
    scu = AE(ae_title="PACS")
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 10
    scu.add_requested_context(Verification)
    scu.add_requested_context(CTImageStorage)
    try:
        assoc = scu.associate("127.0.0.1", port, ae_title="EDGE")
        assert assoc.is_established
        # WHEN it echoes, stores a series and releases
        assert assoc.send_c_echo().Status == 0x0000
        instances = series_from("CT_small.dcm", 20)
        statuses = [assoc.send_c_store(ds).Status for ds in instances]
        assoc.release()
        # THEN every request got its answer and every dataset arrived
        assert statuses == [0x0000] * 20
        assert len(received) == 20
        assert assoc.is_released
    finally:
        scp.shutdown()


def test_an_idle_acceptor_still_notices_a_dead_peer() -> None:
    # GIVEN an established association whose peer then vanishes without a release
    aborted = threading.Event()
    scp = AE(ae_title="EDGE")
    scp.add_supported_context(Verification)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_CONN_CLOSE, lambda _event: aborted.set())]
    )
    assert server is not None
    try:
        scu = AE(ae_title="PACS")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="EDGE")
        assert assoc.is_established
        # WHEN its socket closes
        sock = assoc.dul.socket
        assert isinstance(sock, AssociationSocket) and sock.socket is not None
        sock.socket.shutdown(socket.SHUT_RDWR)
        # THEN the waiting acceptor wakes up and closes its side
        assert aborted.wait(10)
        assoc.abort()
    finally:
        scp.shutdown()
