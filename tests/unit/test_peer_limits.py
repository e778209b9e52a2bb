"""edge_gateway.peer_limits on a socket pair: PDU framing followed, limits enforced from the header."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest

from edge_gateway.peer_limits import NEGOTIATION_PDU_LIMIT, PduRefused, PeerLimits, guarded

LIMITS = PeerLimits(max_pdu=16384, negotiation_timeout=30.0, pdu_timeout=30.0)


def _pdu(pdu_type: int, body: bytes, declared: int | None = None) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body) if declared is None else declared) + body


def _pair(limits: PeerLimits = LIMITS) -> tuple[socket.socket, socket.socket]:
    peer, ours = socket.socketpair()
    return peer, guarded(ours, limits)


def _read_pdu(sock: socket.socket) -> bytes:
    """What pynetdicom does: the 6-byte header, then exactly the declared length."""
    header = sock.recv(6)
    (length,) = struct.unpack(">L", header[2:])
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(min(4096, length - len(body)))
        if not chunk:
            break
        body += chunk
    return header + bytes(body)


def test_whole_pdus_within_the_limits_pass_unchanged() -> None:
    peer, ours = _pair()
    pdus = [_pdu(0x01, b"r" * 300), _pdu(0x04, b"d" * 16384), _pdu(0x05, b"\0" * 4)]
    peer.sendall(b"".join(pdus))
    assert [_read_pdu(ours) for _ in pdus] == pdus


@pytest.mark.parametrize(
    ("pdu_type", "declared"),
    [(0x01, 0xFFFFFFF0), (0x01, NEGOTIATION_PDU_LIMIT + 1), (0x04, 16385)],
)
def test_a_pdu_above_its_limit_is_refused_after_its_header(pdu_type: int, declared: int) -> None:
    # GIVEN a peer that declares too long a PDU and has 1 MB of its body in flight
    peer, ours = _pair()
    peer.setblocking(False)
    peer.send(_pdu(pdu_type, b"", declared))
    with contextlib.suppress(BlockingIOError):
        peer.send(b"x" * (1 << 20))
    # WHEN the gateway reads the header
    with pytest.raises(PduRefused):
        ours.recv(6)
    # THEN it read the 6 header bytes only and shut the connection down
    assert ours.bytes_read == 6
    peer.setblocking(True)
    peer.settimeout(5)
    with pytest.raises(OSError):  # our side shut down: the peer's sends fail
        while True:
            peer.sendall(b"x" * 65536)


def test_a_trickling_peer_is_cut_at_the_pdu_deadline() -> None:
    # GIVEN a peer that sent 3 bytes of a PDU header and nothing more, with a zero deadline
    peer, ours = _pair(PeerLimits(max_pdu=16384, negotiation_timeout=0.0, pdu_timeout=0.0))
    peer.sendall(b"\x01\x00\x00")
    # WHEN the gateway reads the header
    with pytest.raises(TimeoutError):
        ours.recv(6)
    # THEN the connection is shut down: the peer reads end-of-stream
    assert peer.recv(10) == b""


def test_recv_into_without_a_length_fills_the_buffer() -> None:
    peer, ours = _pair()
    peer.sendall(_pdu(0x05, b"\0" * 4))
    buffer = bytearray(10)
    assert ours.recv_into(buffer) == 10
    assert bytes(buffer) == _pdu(0x05, b"\0" * 4)


class _CountingSlot:
    def __init__(self) -> None:
        self.releases = 0

    def established(self) -> None:
        """Not used here."""

    def release(self) -> None:
        self.releases += 1


@pytest.mark.parametrize("how", ["peer closes", "refused", "socket closed"])
def test_the_slot_is_released_when_the_connection_ends(how: str) -> None:
    # GIVEN a guarded connection holding a slot, its A-ASSOCIATE-RQ not complete
    slot = _CountingSlot()
    peer, ours = socket.socketpair()
    ours = guarded(ours, LIMITS, slot)
    peer.sendall(b"\x01\x00")
    assert ours.recv(6) == b"\x01\x00"
    assert slot.releases == 0
    # WHEN the connection ends one way or another
    if how == "peer closes":
        peer.close()
        assert ours.recv(6) == b""
    elif how == "refused":
        peer.sendall(b"\xff\xff\xff\xf0")
        with pytest.raises(PduRefused):
            ours.recv(4)
    else:
        ours.close()
    # THEN the slot was released then, before (or without) pynetdicom closing the socket
    assert slot.releases == 1
    ours.close()
    peer.close()
