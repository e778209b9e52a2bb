"""Limits a DICOM peer cannot get round: PDU sizes checked from the header, and deadlines per PDU.

pynetdicom reads a PDU as its 6-byte header (type, reserved, 4-byte length; PS3.8 9.3)
and then exactly ``length`` bytes, growing a buffer as they arrive, with no limit and with
the socket's timeout applying to each recv only. So an A-ASSOCIATE-RQ declaring
0xFFFFFFF0 bytes is buffered as it arrives, and a peer sending one byte every few
seconds holds the connection (and an association slot) indefinitely; ARTIM cannot fire
while the reactor is blocked in that read.

Here the accepted socket itself (plain or TLS: the checks see the decrypted stream)
follows the PDU framing of what pynetdicom reads from it:

- a PDU whose header declares more than the limit for its type (P-DATA-TF: ``max_pdu``,
  the Maximum Length we announce, PS3.8 D.1; any other type: ``NEGOTIATION_PDU_LIMIT``) is
  refused right after its header: the connection is shut down and nothing of its body is
  read;
- the first PDU (the A-ASSOCIATE-RQ) must be complete ``negotiation_timeout`` seconds
  after the connection was accepted, and every PDU ``pdu_timeout`` seconds after its first
  byte; otherwise the connection is shut down.

A refusal raises ``ConnectionAbortedError`` / ``TimeoutError`` inside pynetdicom's read,
which it handles as a closed transport (Evt17): the association ends, its slot is freed.
Both modes (fast path or stock pynetdicom) go through this; it replaces nothing in
pynetdicom.

The socket also carries the connection's association slot (``association_slots.py``) and
frees it the moment the connection ends: a refusal here, the peer's close (a read returns
nothing) or the socket's close, whichever comes first.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any

from edge_gateway.association_slots import SlotHandle

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
HEADER = 6
# A-ASSOCIATE-RQ and the other non-data PDUs: a full RQ (128 contexts, many syntaxes, user
# identity) stays far below this.
NEGOTIATION_PDU_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class PeerLimits:
    """``max_pdu``: largest P-DATA-TF PDU length accepted (0: no limit); times in seconds."""

    max_pdu: int
    negotiation_timeout: float
    pdu_timeout: float

    def largest(self, pdu_type: int) -> int:
        """The largest PDU length in bytes accepted for ``pdu_type`` (P-DATA-TF: the maximum PDU)."""
        if pdu_type == P_DATA_TF:
            return self.max_pdu or 0xFFFFFFFF
        return NEGOTIATION_PDU_LIMIT


class PduRefused(ConnectionAbortedError):
    """The peer broke a limit; the connection was shut down."""


class _Guard:
    """Mixin for socket classes: tracks PDU framing on every read and enforces ``PeerLimits``."""

    _limits: PeerLimits | None = None
    slot: SlotHandle | None = None

    def guard(self, limits: PeerLimits, slot: SlotHandle | None = None) -> None:
        self._limits = limits
        self.slot = slot
        self._header = bytearray()
        self._body_left = 0
        self._negotiation_deadline: float | None = time.monotonic() + limits.negotiation_timeout
        self._pdu_deadline: float | None = None
        self.bytes_read = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._limits is None:
            return super().recv(bufsize, flags)  # type: ignore[misc,no-any-return]
        with self._deadline():
            data: bytes = super().recv(bufsize, flags)  # type: ignore[misc]
        if not data and bufsize:
            self._peer_closed()
        self._track(data)
        return data

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        # No nbytes means the whole buffer (socket wants 0 for that, SSLSocket None: omit it).
        args = (buffer, nbytes) if nbytes else (buffer,)
        if self._limits is None:
            return super().recv_into(*args, flags=flags)  # type: ignore[misc,no-any-return]
        with self._deadline():
            count: int = super().recv_into(*args, flags=flags)  # type: ignore[misc]
        if not count and (nbytes or len(buffer)):
            self._peer_closed()
        with memoryview(buffer) as view:
            self._track(view[:count])
        return count

    @contextlib.contextmanager
    def _deadline(self) -> Any:
        deadlines = [d for d in (self._negotiation_deadline, self._pdu_deadline) if d is not None]
        if not deadlines:
            yield
            return
        left = min(deadlines) - time.monotonic()
        if left <= 0:
            self._refuse("the peer took too long to send a PDU")
            raise TimeoutError("PDU deadline passed")
        previous = self.gettimeout()  # type: ignore[attr-defined]
        self.settimeout(left if previous is None else min(previous, left))  # type: ignore[attr-defined]
        try:
            yield
        except TimeoutError:
            if min(deadlines) <= time.monotonic():
                self._refuse("the peer took too long to send a PDU")
            raise
        finally:
            with contextlib.suppress(OSError):
                self.settimeout(previous)  # type: ignore[attr-defined]

    def _track(self, data: bytes | memoryview) -> None:
        assert self._limits is not None
        self.bytes_read += len(data)
        pos, end = 0, len(data)
        while pos < end:
            if len(self._header) < HEADER:
                if not self._header:
                    self._pdu_deadline = time.monotonic() + self._limits.pdu_timeout
                take = min(HEADER - len(self._header), end - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) == HEADER:
                    pdu_type, _, length = struct.unpack(">BBL", self._header)
                    if length > self._limits.largest(pdu_type):
                        self._refuse(
                            f"PDU type 0x{pdu_type:02X} declares {length} bytes, "
                            f"limit {self._limits.largest(pdu_type)}"
                        )
                        raise PduRefused("PDU above the limit")
                    self._body_left = length
            else:
                take = min(self._body_left, end - pos)
                self._body_left -= take
                pos += take
            if len(self._header) == HEADER and not self._body_left:
                self._header.clear()  # a whole PDU: the next one starts its own deadline
                self._pdu_deadline = None
                self._negotiation_deadline = None

    def _refuse(self, why: str) -> None:
        log.warning("connection closed: %s (%d bytes read)", why, self.bytes_read)
        self._limits = None
        with contextlib.suppress(OSError):
            self.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        self._release_slot()

    def _peer_closed(self) -> None:
        """A read returned nothing: the peer closed (or shut down its sending side)."""
        self._release_slot()

    def _release_slot(self) -> None:
        if self.slot is not None:
            self.slot.release()

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        self._release_slot()


class GuardedSocket(_Guard, socket.socket):
    """A plain TCP connection with ``PeerLimits``."""


class GuardedSSLSocket(_Guard, ssl.SSLSocket):  # type: ignore[misc]
    """A TLS connection with ``PeerLimits`` on the decrypted stream (``SSLContext.sslsocket_class``)."""


def guarded(connection: socket.socket, limits: PeerLimits, slot: SlotHandle | None = None) -> GuardedSocket:
    """The accepted ``connection`` as a GuardedSocket (same descriptor, ``connection`` detached)."""
    timeout = connection.gettimeout()
    sock = GuardedSocket(connection.family, connection.type, connection.proto, fileno=connection.detach())
    sock.settimeout(timeout)
    sock.guard(limits, slot)
    return sock
