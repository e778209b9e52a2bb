"""edge_gateway.reactor_checkpoint: the requestor's reactor race, forced, lost with stock pynetdicom
and not with the fix; the guard.

The forcing: the requestor's reactor thread is held right after it is woken from its
checkpoint (before it writes ``_is_paused = False``) until either the next request's
response is queued (stock: the caller did not wait for it) or the caller is seen waiting
for the reactor to park (the fix). The caller's blocking ``get_msg`` waits until the
reactor has made its next ``get_msg``, so the reactor always gets the first chance at the
response: exactly the interleaving a busy machine produces now and then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, association, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from edge_gateway import pynetdicom_guard, reactor_checkpoint
from tests.helpers.dicom_factory import series_from

HOLD_LIMIT = 10.0  # s: only a safety net; each hold ends on a condition


@pytest.fixture
def storescp() -> Iterator[int]:
    """pynetdicom's own Storage SCP, stock handlers, answering 0x0000."""
    ae = AE(ae_title="EDGE")
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)]
    )
    yield int(server.server_address[1])
    ae.shutdown()


@pytest.fixture
def stock() -> Iterator[None]:
    reactor_checkpoint.remove()
    yield
    reactor_checkpoint.remove()


@pytest.fixture
def fixed() -> Iterator[None]:
    assert reactor_checkpoint.install()
    yield
    reactor_checkpoint.remove()


class _Forcing:
    """Holds ``assoc``'s reactor after each wake from a pause (see the module docstring)."""

    def __init__(self, assoc: association.Association) -> None:
        self.assoc = assoc
        self.caller_waits_for_park = threading.Event()
        self.reactor_got = threading.Event()
        self.holds = 0
        self.armed = True
        self._holding = False
        forcing = self
        base = type(assoc._reactor_checkpoint)

        class Held(base):  # type: ignore[valid-type,misc]
            def wait(self, timeout: float | None = None) -> bool:
                was_open = self.is_set()
                woke = bool(super().wait(timeout))
                if not was_open and forcing.armed and threading.current_thread() is forcing.assoc:
                    forcing.hold()
                return woke

            @property
            def parked(self) -> bool:
                parked = bool(base.parked.fget(self))  # type: ignore[attr-defined]
                if not parked and not forcing.caller_waits_for_park.is_set():
                    forcing.caller_waits_for_park.set()
                    with forcing.assoc.dimse.msg_queue.not_empty:
                        forcing.assoc.dimse.msg_queue.not_empty.notify_all()  # ends the hold
                return parked

        held = Held()
        held.set()
        assoc._reactor_checkpoint = held
        real_get = assoc.dimse.get_msg

        def get_msg(block: bool = False) -> Any:
            if threading.current_thread() is assoc:
                got = real_get(block=False)
                if self._holding:
                    self._holding = False
                    self.reactor_got.set()
                return got
            # The caller: only after a held reactor had its chance at the response.
            if self._holding:
                self.reactor_got.wait(HOLD_LIMIT)
            self.reactor_got.clear()
            return real_get(block=block)

        assoc.dimse.get_msg = get_msg  # type: ignore[method-assign]

    def hold(self) -> None:
        self.holds += 1
        self._holding = True
        self.caller_waits_for_park.clear()
        queue = self.assoc.dimse.msg_queue
        with queue.not_empty:
            queue.not_empty.wait_for(
                lambda: queue._qsize() > 0 or self.caller_waits_for_park.is_set() or not self.armed,
                HOLD_LIMIT,
            )

    def disarm(self) -> None:
        self.armed = False
        with self.assoc.dimse.msg_queue.not_empty:
            self.assoc.dimse.msg_queue.not_empty.notify_all()


def _send_forced(port: int, instances: list[Dataset]) -> tuple[list[int | None], bool]:
    """C-STORE each instance with the reactor forced; (status or None per instance, aborted)."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    ae.dimse_timeout = 3
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE")
    assert assoc.is_established
    statuses: list[int | None] = [int(assoc.send_c_store(instances[0]).Status)]  # a first pause to wake from
    forcing = _Forcing(assoc)
    for ds in instances[1:]:
        if not assoc.is_established:
            statuses.append(None)
            continue
        rsp = assoc.send_c_store(ds)
        if "Status" not in rsp:
            forcing.disarm()  # aborted: nothing more to force
        statuses.append(int(rsp.Status) if "Status" in rsp else None)
    aborted = assoc.is_aborted
    forcing.disarm()
    assoc.dimse.get_msg = type(assoc.dimse).get_msg.__get__(assoc.dimse)  # type: ignore[method-assign]
    forcing.reactor_got.set()
    if assoc.is_established:
        assoc.release()
    assert forcing.holds >= 1
    return statuses, aborted


def test_stock_requestor_loses_the_response_the_reactor_takes(
    stock: None, storescp: int, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN stock pynetdicom's requestor, its reactor held after each wake as described above
    instances = series_from("CT_small.dcm", 4)
    # WHEN four instances are sent over one association
    with caplog.at_level(logging.INFO, logger="pynetdicom"):
        statuses, aborted = _send_forced(storescp, instances)
    # THEN the reactor took a response: that request got none, the association was aborted
    assert statuses[0] == 0x0000
    assert None in statuses and aborted
    assert "unexpected C-STORE service message" in caplog.text


def test_fixed_requestor_gets_every_response_under_the_same_forcing(
    fixed: None, storescp: int, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the race-free checkpoint and the same forcing
    instances = series_from("CT_small.dcm", 4)
    # WHEN four instances are sent over one association
    with caplog.at_level(logging.INFO, logger="pynetdicom"):
        statuses, aborted = _send_forced(storescp, instances)
    # THEN every request got its own response and the association was released normally
    assert statuses == [0x0000] * 4
    assert not aborted
    assert "unexpected" not in caplog.text


def test_guard_refuses_a_changed_function_and_leaves_pynetdicom_stock(
    stock: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    changed = dict(reactor_checkpoint.STOCK_SOURCE_SHA256, **{"Association._run_reactor": "0" * 64})
    monkeypatch.setattr(reactor_checkpoint, "STOCK_SOURCE_SHA256", changed)
    assert reactor_checkpoint.install() is False
    assert not reactor_checkpoint.installed()
    assert "Association._run_reactor" in caplog.text


def test_guard_matches_the_installed_pynetdicom() -> None:
    """Fails when the installed pynetdicom differs from what the fix was written against."""
    assert pynetdicom_guard.version_supported()
    owners = {"Association": association.Association}
    assert pynetdicom_guard.mismatches(owners, reactor_checkpoint.STOCK_SOURCE_SHA256) == []


@pytest.mark.parametrize("mode", ["stock", "fixed"])
def test_c_get_sub_operations_sent_from_the_reactor_thread_complete(mode: str) -> None:
    # GIVEN a Q/R SCP whose C-GET handler yields two instances (sent as C-STORE sub-operations
    # from its own reactor thread), with the checkpoint fix installed or not
    from pynetdicom import build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

    if mode == "fixed":
        assert reactor_checkpoint.install()
    else:
        reactor_checkpoint.remove()
    instances = series_from("CT_small.dcm", 2)

    def on_get(event: evt.Event) -> Iterator[Any]:
        yield len(instances)
        for ds in instances:
            yield 0xFF00, ds

    scp = AE(ae_title="QRSCP")
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    scp.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_GET, on_get)])
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    scu = AE(ae_title="GETSCU")
    scu.dimse_timeout = 20
    scu.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    scu.add_requested_context(CTImageStorage)
    try:
        assoc = scu.associate(
            "127.0.0.1",
            int(server.server_address[1]),
            ae_title="QRSCP",
            ext_neg=[build_role(CTImageStorage, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = instances[0].StudyInstanceUID
        # WHEN the C-GET runs
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            if status
        ]
        assoc.release()
    finally:
        scp.shutdown()
        reactor_checkpoint.remove()
    # THEN both sub-operations completed and the C-GET ended with Success
    assert sorted(received) == sorted(ds.SOPInstanceUID for ds in instances)
    assert statuses[-1] == 0x0000
