"""Balanced hand-off of accepted DICOM connections to receiver processes.

With ``receivers = N`` the coordinator accepts every connection and gives it to the
process (itself included) with the fewest open associations, passing the socket
over a Unix socket pair (SCM_RIGHTS). SO_REUSEPORT would let the kernel pick by a
hash of the addresses instead, which put 3 or 4 of 4 senders on one process in
more than half of the runs measured here. The coordinator admits each connection first
(``association_slots.py``: slots for known peers, limits for the others) and keeps every
slot in its table; receivers report back when an association is accepted and when a
connection closes, so the counts (and the limits) stay current for the whole gateway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from dataclasses import dataclass, field

from edge_gateway.association_slots import COORDINATOR, AssociationSlots, Slot

log = logging.getLogger(__name__)
# Messages from a receiver, one per SEQPACKET message: the letter, then the slot id.
ESTABLISHED, CLOSED = b"e", b"c"


@dataclass
class _Receiver:
    channel: socket.socket
    owner: int
    alive: bool = True


class ConnectionDispatcher:
    """In the coordinator: route each admitted connection to the least-busy process.

    Open connections are counted in the coordinator's slot table (``association_slots``);
    ``route`` runs in the accepting thread only; receivers report each slot's state changes
    (accepted, closed) on their channel, read by one thread per receiver.
    """

    def __init__(self, slots: AssociationSlots) -> None:
        self._lock = threading.Lock()
        self._slots = slots
        self._receivers: list[_Receiver] = []

    def attach(self) -> socket.socket:
        """A new receiver's end of a channel (give it to the process, then close it here)."""
        # SEQPACKET keeps each hand-off (address + descriptor) and each report a separate message.
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with self._lock:
            receiver = _Receiver(mine, owner=len(self._receivers) + 1)
            self._receivers.append(receiver)
        threading.Thread(target=self._reports, args=(receiver,), name="edge-dispatch", daemon=True).start()
        return theirs

    def route(self, connection: socket.socket, address: tuple[str, int], slot: Slot) -> bool:
        """True when a receiver process took the connection (close this process's copy only).

        ``slot`` is the connection's, admitted here (counted for the coordinator until handed).
        """
        with self._lock:
            alive = [r for r in self._receivers if r.alive]
        counts = self._slots.open_by_owner(len(self._receivers) + 1)
        counts[COORDINATOR] -= 1  # this connection's own slot, not yet served anywhere
        best = min(alive, key=lambda r: counts[r.owner], default=None)
        if best is None or counts[best.owner] >= counts[COORDINATOR]:
            return False
        self._slots.hand_to(slot.id, best.owner)
        try:
            message = json.dumps([*address[:2], slot.id]).encode()
            socket.send_fds(best.channel, [message], [connection.fileno()])
            return True
        except OSError as exc:  # the receiver died: serve it here
            log.warning("receiver process unreachable (%s); serving the connection here", exc.strerror)
            with self._lock:
                best.alive = False
            self._slots.hand_to(slot.id, COORDINATOR)
            return False

    def counts(self) -> tuple[int, list[int]]:
        """Open connections: (this process, each live receiver)."""
        with self._lock:
            alive = [r.owner for r in self._receivers if r.alive]
        counts = self._slots.open_by_owner(len(self._receivers) + 1)
        return counts[COORDINATOR], [counts[owner] for owner in alive]

    def _reports(self, receiver: _Receiver) -> None:
        while True:
            try:
                report = receiver.channel.recv(32)
            except OSError:
                report = b""
            if not report:  # the process is gone, and its connections with it
                with self._lock:
                    receiver.alive = False
                self._slots.release_owner(receiver.owner)
                return
            kind, slot_id = report[:1], report[1:]
            if not slot_id.isdigit():
                log.error("receiver process sent an unreadable report; ignored")
            elif kind == ESTABLISHED:
                self._slots.established(int(slot_id))
            elif kind == CLOSED:
                self._slots.release(int(slot_id))


class RemoteSlot:
    """In a receiver: the slot of a handed-off connection, kept in the coordinator's table."""

    def __init__(self, channel: socket.socket, slot_id: int) -> None:
        self._channel = channel
        self.id = slot_id
        self._released = False

    def established(self) -> None:
        """Tell the coordinator the association was accepted."""
        self._report(ESTABLISHED)

    def release(self) -> None:
        """Tell the coordinator (once) that the connection closed."""
        if not self._released:
            self._released = True
            self._report(CLOSED)

    def _report(self, kind: bytes) -> None:
        with contextlib.suppress(OSError):  # the coordinator is gone: nobody is counting any more
            self._channel.send(kind + str(self.id).encode())


@dataclass
class Handoff:
    """A receiver process's end: the channel, and an event set when it should stop."""

    channel: socket.socket
    done: threading.Event = field(default_factory=threading.Event)


def receive_connection(channel: socket.socket) -> tuple[socket.socket, tuple[str, int], RemoteSlot] | None:
    """In a receiver: the next handed-off connection with its slot, or None when the coordinator is gone."""
    message, fds, _flags, _address = socket.recv_fds(channel, 1024, 1)
    if not fds:
        return None
    connection = socket.socket(fileno=fds[0])
    host, port, slot_id = json.loads(message)
    return connection, (str(host), int(port)), RemoteSlot(channel, int(slot_id))
