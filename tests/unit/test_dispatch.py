"""Connection hand-off to receiver processes: the least-busy process gets the next connection."""

from __future__ import annotations

import socket
import time

import pytest

from edge_gateway.association_slots import AssociationSlots, Slot, SlotPolicy
from edge_gateway.dispatch import ConnectionDispatcher, RemoteSlot, receive_connection

PEER = "192.0.2.1"


@pytest.fixture
def slots() -> AssociationSlots:
    return AssociationSlots(
        SlotPolicy(
            max_associations=100,
            reserved_associations=0,
            max_negotiating=100,
            max_negotiating_per_address=100,
        )
    )


@pytest.fixture
def dispatcher(slots: AssociationSlots) -> ConnectionDispatcher:
    return ConnectionDispatcher(slots)


def _route(dispatcher: ConnectionDispatcher, slots: AssociationSlots) -> tuple[bool, Slot]:
    slot = slots.admit(PEER)
    assert slot is not None
    ours, _peer = socket.socketpair()
    return dispatcher.route(ours, (PEER, 4242), slot), slot


def _settle(dispatcher: ConnectionDispatcher, expected: tuple[int, list[int]]) -> tuple[int, list[int]]:
    """Reports are read by a thread: wait (bounded) until the counts match."""
    deadline = time.monotonic() + 10
    while dispatcher.counts() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return dispatcher.counts()


def test_four_connections_split_two_and_two(
    dispatcher: ConnectionDispatcher, slots: AssociationSlots
) -> None:
    # GIVEN a coordinator with one receiver process
    channel = dispatcher.attach()
    # WHEN four connections arrive while none has closed
    routed = [_route(dispatcher, slots)[0] for _ in range(4)]
    # THEN the coordinator kept two and handed two over, alternating
    assert routed == [False, True, False, True]
    assert dispatcher.counts() == (2, [2])
    # ... and the receiver gets working sockets with the peer's address and the slot's id
    for _ in range(2):
        handed = receive_connection(channel)
        assert handed is not None
        sock, address, remote = handed
        assert address == (PEER, 4242)
        assert isinstance(remote, RemoteSlot) and remote.id > 0
        assert sock.fileno() >= 0
        sock.close()
    channel.close()


def test_reports_of_the_receiver_reach_the_slot_table(
    dispatcher: ConnectionDispatcher, slots: AssociationSlots
) -> None:
    channel = dispatcher.attach()
    local = [_route(dispatcher, slots) for _ in range(4)]
    handed = [receive_connection(channel) for _ in range(2)]
    remotes = [h[2] for h in handed if h is not None]
    # WHEN one handed-off association is accepted, then both of the receiver's connections close
    # (one reported twice), and one of the coordinator's
    remotes[0].established()
    deadline = time.monotonic() + 10
    while slots.counts()["established"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slots.counts()["established"] == 1
    for remote in (*remotes, remotes[0]):
        remote.release()
    local[0][1].release()
    assert _settle(dispatcher, (1, [0])) == (1, [0])
    # THEN the next connection goes to the receiver
    assert _route(dispatcher, slots)[0] is True


def test_a_dead_receiver_frees_its_slots_and_is_skipped(
    dispatcher: ConnectionDispatcher, slots: AssociationSlots
) -> None:
    channel = dispatcher.attach()
    assert [_route(dispatcher, slots)[0] for _ in range(2)] == [False, True]
    # WHEN the receiver process is gone (its end closed)
    channel.close()
    assert _settle(dispatcher, (1, [])) == (1, [])
    assert slots.counts()["negotiating"] == 1  # its connection's slot is free again
    # THEN every new connection is served by the coordinator
    assert _route(dispatcher, slots)[0] is False
    assert dispatcher.counts() == (2, [])
