"""Balanced hand-off of accepted DICOM connections to receiver processes.

With ``receivers = N`` the coordinator accepts every connection and gives it to the
process (itself included) with the fewest open associations, passing the socket
over a Unix socket pair (SCM_RIGHTS). SO_REUSEPORT would let the kernel pick by a
hash of the addresses instead, which put 3 or 4 of 4 senders on one process in
more than half of the runs measured here. Receivers write one byte back each time
one of their connections closes, so the counts stay current.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
CLOSED = b"."


@dataclass
class _Receiver:
    channel: socket.socket
    open: int = 0
    alive: bool = True


class ConnectionDispatcher:
    """In the coordinator: route each accepted connection to the least-busy process.

    ``route`` runs in the accepting thread only; close counts arrive on one thread per receiver.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = 0
        self._receivers: list[_Receiver] = []

    def attach(self) -> socket.socket:
        """A new receiver's end of a channel (give it to the process, then close it here)."""
        # SEQPACKET keeps each hand-off (address + descriptor) and each close byte a separate message.
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        receiver = _Receiver(mine)
        with self._lock:
            self._receivers.append(receiver)
        threading.Thread(
            target=self._count_closes, args=(receiver,), name="edge-dispatch", daemon=True
        ).start()
        return theirs

    def route(self, connection: socket.socket, address: tuple[str, int]) -> bool:
        """True when a receiver process took the connection (close this process's copy only)."""
        with self._lock:
            alive = [r for r in self._receivers if r.alive]
            best = min(alive, key=lambda r: r.open, default=None)
            if best is None or best.open >= self._local:
                self._local += 1
                return False
            best.open += 1
        try:
            message = json.dumps(list(address[:2])).encode()
            socket.send_fds(best.channel, [message], [connection.fileno()])
            return True
        except OSError as exc:  # the receiver died: serve it here
            log.warning("receiver process unreachable (%s); serving the connection here", exc.strerror)
            with self._lock:
                best.alive = False
                self._local += 1
            return False

    def local_closed(self) -> None:
        """Count the end of a connection that was served in the coordinator itself."""
        with self._lock:
            self._local = max(0, self._local - 1)

    def counts(self) -> tuple[int, list[int]]:
        """Open associations: (this process, each live receiver)."""
        with self._lock:
            return self._local, [r.open for r in self._receivers if r.alive]

    def _count_closes(self, receiver: _Receiver) -> None:
        while True:
            try:
                closes = receiver.channel.recv(16)
            except OSError:
                closes = b""
            with self._lock:
                if not closes:  # the process is gone, and its associations with it
                    receiver.alive, receiver.open = False, 0
                    return
                receiver.open = max(0, receiver.open - closes.count(CLOSED))


@dataclass
class Handoff:
    """A receiver process's end: the channel, and an event set when it should stop."""

    channel: socket.socket
    done: threading.Event = field(default_factory=threading.Event)


def receive_connection(channel: socket.socket) -> tuple[socket.socket, tuple[str, int]] | None:
    """In a receiver: the next handed-off connection, or None when the coordinator is gone."""
    message, fds, _flags, _address = socket.recv_fds(channel, 1024, 1)
    if not fds:
        return None
    connection = socket.socket(fileno=fds[0])
    host, port = json.loads(message)
    return connection, (str(host), int(port))
