"""Connection hand-off to receiver processes: the least-busy process gets the next connection."""

from __future__ import annotations

import socket
import time

import pytest

from edge_gateway.dispatch import CLOSED, ConnectionDispatcher, receive_connection


@pytest.fixture
def dispatcher() -> ConnectionDispatcher:
    return ConnectionDispatcher()


def _connection() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


def _settle(dispatcher: ConnectionDispatcher, expected: tuple[int, list[int]]) -> tuple[int, list[int]]:
    """Close notifications are counted by a thread: wait (bounded) until the counts match."""
    deadline = time.monotonic() + 10
    while dispatcher.counts() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return dispatcher.counts()


def test_four_connections_split_two_and_two(dispatcher: ConnectionDispatcher) -> None:
    # GIVEN a coordinator with one receiver process
    channel = dispatcher.attach()
    # WHEN four connections arrive while none has closed
    routed = []
    for _ in range(4):
        ours, _peer = _connection()
        routed.append(dispatcher.route(ours, ("192.0.2.1", 4242)))
    # THEN the coordinator kept two and handed two over, alternating
    assert routed == [False, True, False, True]
    assert dispatcher.counts() == (2, [2])
    # ... and the receiver gets working sockets with the peer's address
    for _ in range(2):
        handed = receive_connection(channel)
        assert handed is not None
        sock, address = handed
        assert address == ("192.0.2.1", 4242)
        assert sock.fileno() >= 0
        sock.close()
    channel.close()


def test_closes_reported_by_the_receiver_bring_it_back_first(dispatcher: ConnectionDispatcher) -> None:
    channel = dispatcher.attach()
    for _ in range(4):
        dispatcher.route(_connection()[0], ("192.0.2.1", 1))
    # WHEN the receiver's two associations end, and one of the coordinator's
    channel.send(CLOSED)
    channel.send(CLOSED)
    dispatcher.local_closed()
    assert _settle(dispatcher, (1, [0])) == (1, [0])
    # THEN the next connection goes to the receiver
    assert dispatcher.route(_connection()[0], ("192.0.2.1", 1)) is True


def test_a_dead_receiver_is_skipped_and_its_connection_served_here(dispatcher: ConnectionDispatcher) -> None:
    channel = dispatcher.attach()
    dispatcher.route(_connection()[0], ("192.0.2.1", 1))  # kept here
    # WHEN the receiver process is gone (its end closed)
    channel.close()
    assert _settle(dispatcher, (1, [])) == (1, [])
    # THEN every new connection is served by the coordinator
    assert dispatcher.route(_connection()[0], ("192.0.2.1", 1)) is False
    assert dispatcher.counts() == (2, [])


def test_local_count_never_goes_negative(dispatcher: ConnectionDispatcher) -> None:
    dispatcher.local_closed()
    assert dispatcher.counts() == (0, [])
