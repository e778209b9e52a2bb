"""Event-driven waits for pynetdicom's per-association threads, and a socket read without 4 KB steps.

pynetdicom 3.0 runs two polling threads per association: the association reactor
sleeps 1 ms on every loop and the DUL reactor sleeps 1 ms whenever it found nothing
to do. Each C-STORE then waits for up to two sleeps, every wake-up is a GIL hand-off,
and idle associations cost CPU. Here those two sleeps, and only those (the caller's
code object is checked), become waits that end as soon as there is work: the DUL
thread waits in select() on its socket and on an eventfd written when a PDU is queued
for sending; the association thread waits on its DIMSE message queue, also woken when
a release or abort arrives. Both still wake every IDLE_TICK, so pynetdicom's own timer,
release and abort checks run unchanged.

pynetdicom reads a PDU 4 KB per recv() into a growing bytearray (about 128 calls
for a 0.5 MB instance); ``_recv`` reads into one buffer, growing it only as data
arrives (so a lying PDU length cannot make it allocate gigabytes), and asks for
immediate ACKs: with fewer reads, delayed ACKs would stall senders that keep Nagle's
algorithm on (measured: 100-180 instances/s without, ~400 with).

Installed and removed only by ``edge_gateway.pynetdicom_fast_path`` (version, source-hash
and platform guard); importing this module changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import sys
import threading
import time
import weakref
from types import ModuleType
from typing import Any

from pynetdicom import association, dul, transport

log = logging.getLogger(__name__)
IDLE_TICK = 0.02
RECV_CHUNK = 1 << 20
# Linux only: without it the gateway's reads ACK as the kernel likes (slower with Nagle senders).
TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing queue: every put also writes the DUL's eventfd."""

    _wake_fd: int

    def _put(self, item: Any) -> None:
        super()._put(item)
        os.eventfd_write(self._wake_fd, 1)


class _NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's queue to the association (release, abort): a put also wakes the association."""

    _also: threading.Condition

    def _put(self, item: Any) -> None:
        super()._put(item)
        with self._also:
            self._also.notify_all()


def _wake_fd(dul_provider: dul.DULServiceProvider) -> int:
    outgoing = dul_provider.to_provider_queue
    fd = getattr(outgoing, "_wake_fd", None)
    if fd is None:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        outgoing._wake_fd = fd  # type: ignore[attr-defined]
        weakref.finalize(outgoing, os.close, fd)  # nothing can put once the queue is gone
        outgoing.__class__ = _WakingQueue  # items already queued are checked by the caller
    return int(fd)


def _dul_wait(dul_provider: dul.DULServiceProvider) -> None:
    assoc_socket = dul_provider.socket
    sock = getattr(assoc_socket, "socket", None)
    if sock is None or not getattr(assoc_socket, "_is_connected", False):
        time.sleep(dul_provider._run_loop_delay)
        return
    fd = _wake_fd(dul_provider)
    if dul_provider.to_provider_queue.qsize() or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
        return
    try:
        ready, _, _ = select.select([sock, fd], [], [], IDLE_TICK)
    except (OSError, ValueError):  # the socket closed under us: pynetdicom's own check reports it
        time.sleep(dul_provider._run_loop_delay)
        return
    if fd in ready:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(fd)


def _association_wait(assoc: association.Association) -> None:
    messages = assoc.dimse.msg_queue
    incoming = assoc.dul.to_user_queue
    if not isinstance(incoming, _NotifyingQueue):
        incoming._also = messages.not_empty  # type: ignore[attr-defined]
        incoming.__class__ = _NotifyingQueue
    with messages.not_empty:
        if not messages._qsize():
            messages.not_empty.wait(IDLE_TICK)


class _ReactorTime:
    """Stands in for the ``time`` module inside pynetdicom.dul and pynetdicom.association.

    Only acceptor associations (the gateway's) wait differently: a requestor's thread
    that wants to pause its reactor spins until the reactor's sleep ends.
    """

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        caller = sys._getframe(1).f_code
        thread = threading.current_thread()
        if (
            caller is _loops.get("dul")
            and isinstance(thread, dul.DULServiceProvider)
            and thread.assoc.is_acceptor
        ):
            _dul_wait(thread)
        elif (
            caller is _loops.get("association")
            and isinstance(thread, association.Association)
            and thread.is_acceptor
        ):
            _association_wait(thread)
        else:
            self._real.sleep(seconds)


def _recv(self: transport.AssociationSocket, nr_bytes: int) -> bytearray:
    """Read exactly ``nr_bytes`` (fewer only if the peer closed), in as few recv calls as arrive."""
    sock = self.socket
    assert sock is not None
    tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
    buffer = bytearray(min(nr_bytes, RECV_CHUNK))
    received = 0
    while received < nr_bytes:
        if received == len(buffer):
            buffer.extend(bytes(min(nr_bytes - received, RECV_CHUNK)))
        # Acknowledge at once: a sender with Nagle's algorithm on (most modalities) holds its
        # last segment until the previous ones are acknowledged; delayed ACKs cost ~40 ms.
        if tcp and TCP_QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
        with memoryview(buffer) as view:
            count = sock.recv_into(view[received:], len(buffer) - received)
        if not count:
            del buffer[received:]
            break
        received += count
    return buffer


# The two loops whose sleeps become waits (their code objects, read by install()).
_loops: dict[str, Any] = {}
_STOCK_RECV = "__stock_recv__"


def install(event_waits: bool = True) -> None:
    """Whole-PDU reads, and (``event_waits``, needs os.eventfd) event-driven reactor waits, in this
    process (no checks here: ``pynetdicom_fast_path.install`` has checked version and sources)."""
    if event_waits:
        _loops["dul"] = dul.DULServiceProvider.run_reactor.__code__
        _loops["association"] = association.Association._run_reactor.__code__
        vars(dul)["time"] = _ReactorTime(time)  # their module-level ``time`` name
        vars(association)["time"] = _ReactorTime(time)
    if not hasattr(transport, _STOCK_RECV):
        setattr(transport, _STOCK_RECV, transport.AssociationSocket.recv)
    transport.AssociationSocket.recv = _recv  # type: ignore[method-assign]


def remove() -> None:
    """Stock waits and reads again (associations already running keep their patched queues,
    which behave as stock queues plus a wake-up)."""
    vars(dul)["time"] = time
    vars(association)["time"] = time
    stock = getattr(transport, _STOCK_RECV, None)
    if stock is not None:
        transport.AssociationSocket.recv = stock  # type: ignore[method-assign]
        delattr(transport, _STOCK_RECV)
    _loops.clear()
