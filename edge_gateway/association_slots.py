"""Association slots: who may hold one of the ``max_associations`` connections, decided at accept.

pynetdicom counts an acceptor's slot from the moment its thread starts, before a byte of the
A-ASSOCIATE-RQ has arrived, so silent or trickling sockets from anywhere could fill
``max_associations`` and a real PACS got "Local limit exceeded" (A-ASSOCIATE-RJ, PS3.8
9.3.4, reason 2 "local-limit-exceeded") until they timed out. Here the accepting process
admits each connection, before reading anything from it, by its source address:

- a *known* peer (inside ``known_peer_networks``, the host of a ``known_aets`` entry, or an
  address that had an association accepted since the gateway started) gets a slot while
  fewer than ``max_associations`` connections are open;
- any other address gets one only while fewer than ``max_associations -
  reserved_associations`` are open, fewer than ``max_negotiating`` connections of such
  addresses are still negotiating (accepted, no A-ASSOCIATE-AC sent yet) and fewer than
  ``max_negotiating_per_address`` of its own are;
- a connection refused is closed at once, nothing read from it.

A slot is *negotiating* until the association is accepted (``established``), and is freed
the moment its connection closes: a peer close or a limit of ``peer_limits`` frees it
before pynetdicom's thread has noticed. Slots of connections handed to receiver processes
are kept here too (their state changes come back over the hand-off channel,
``dispatch.py``), so the limits hold for the whole gateway, not per process.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LEARNED_ADDRESSES = 1024  # addresses remembered as known (most recently accepted kept)
REFUSAL_LOG_EVERY = 10.0  # seconds between two log lines about refused connections
COORDINATOR = 0  # the owner of slots served in the accepting process itself


def peer_address(host: str) -> IpAddress | None:
    """``host`` as an IP address (an IPv4-mapped IPv6 address as IPv4); None if it is none."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class SlotPolicy:
    """The limits; counts of connections, networks of known peers."""

    max_associations: int
    reserved_associations: int = 4
    max_negotiating: int = 8
    max_negotiating_per_address: int = 4
    known_networks: tuple[IpNetwork, ...] = ()


class SlotHandle(Protocol):
    """What a connection's socket holds: tell the accepting process what became of it."""

    def established(self) -> None:
        """The association was accepted (A-ASSOCIATE-AC sent)."""

    def release(self) -> None:
        """The connection closed; idempotent."""


@dataclass
class _Entry:
    address: IpAddress | None
    known: bool
    owner: int
    established: bool = False


class AssociationSlots:
    """The slot table of the accepting process; thread-safe."""

    def __init__(self, policy: SlotPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._ids = itertools.count(1)
        self._negotiating_unknown: Counter[IpAddress | None] = Counter()
        self._learned: OrderedDict[IpAddress, None] = OrderedDict()
        self._refused = 0
        self._refusal_logged = 0.0

    def is_known(self, address: IpAddress | None) -> bool:
        """A configured or learned peer address."""
        if address is None:
            return False
        with self._lock:
            return self._known(address)

    def _known(self, address: IpAddress | None) -> bool:
        if address is None:
            return False
        return address in self._learned or any(address in n for n in self.policy.known_networks)

    def admit(self, host: str) -> Slot | None:
        """A slot for a connection from ``host`` (an IP address string), or None: close it unread."""
        address = peer_address(host)
        policy = self.policy
        with self._lock:
            known = self._known(address)
            open_now = len(self._entries)
            if known:
                admitted = open_now < policy.max_associations
            else:
                admitted = (
                    open_now < policy.max_associations - policy.reserved_associations
                    and sum(self._negotiating_unknown.values()) < policy.max_negotiating
                    and self._negotiating_unknown[address] < policy.max_negotiating_per_address
                )
            if not admitted:
                self._refused += 1
                self._log_refusal(known)
                return None
            slot_id = next(self._ids)
            self._entries[slot_id] = _Entry(address, known, COORDINATOR)
            if not known:
                self._negotiating_unknown[address] += 1
        return Slot(self, slot_id)

    def _log_refusal(self, known: bool) -> None:
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_EVERY:
            self._refusal_logged = now
            log.warning(
                "connection closed unread: no association slot for %s peer (%d refused so far; %s)",
                "a known" if known else "an unlisted",
                self._refused,
                self._describe(),
            )

    def _describe(self) -> str:
        established = sum(1 for e in self._entries.values() if e.established)
        return f"{established} established, {len(self._entries) - established} negotiating"

    def hand_to(self, slot_id: int, owner: int) -> None:
        """The connection of ``slot_id`` is now served by process ``owner`` (1.. receivers)."""
        with self._lock:
            entry = self._entries.get(slot_id)
            if entry is not None:
                entry.owner = owner

    def established(self, slot_id: int) -> None:
        """The association of ``slot_id`` was accepted: its address becomes a known peer."""
        with self._lock:
            entry = self._entries.get(slot_id)
            if entry is None or entry.established:
                return
            entry.established = True
            self._end_negotiation(entry)
            if entry.address is not None:
                self._learned[entry.address] = None
                self._learned.move_to_end(entry.address)
                while len(self._learned) > LEARNED_ADDRESSES:
                    self._learned.popitem(last=False)

    def release(self, slot_id: int) -> None:
        """The connection of ``slot_id`` closed (again: nothing happens)."""
        with self._lock:
            entry = self._entries.pop(slot_id, None)
            if entry is not None and not entry.established:
                self._end_negotiation(entry)

    def release_owner(self, owner: int) -> int:
        """Free every slot served by process ``owner`` (it died); how many."""
        with self._lock:
            gone = [i for i, e in self._entries.items() if e.owner == owner]
            for slot_id in gone:
                entry = self._entries.pop(slot_id)
                if not entry.established:
                    self._end_negotiation(entry)
            return len(gone)

    def _end_negotiation(self, entry: _Entry) -> None:
        if not entry.known:
            self._negotiating_unknown[entry.address] -= 1
            if self._negotiating_unknown[entry.address] <= 0:
                del self._negotiating_unknown[entry.address]

    def open_by_owner(self, owners: int) -> list[int]:
        """Open connections of each process ``0 .. owners-1`` (0: the accepting process)."""
        counts = [0] * owners
        with self._lock:
            for entry in self._entries.values():
                if entry.owner < owners:
                    counts[entry.owner] += 1
        return counts

    def counts(self) -> dict[str, int]:
        """``{"established": n, "negotiating": n, "negotiating_unlisted": n, "refused": n}``."""
        with self._lock:
            established = sum(1 for e in self._entries.values() if e.established)
            return {
                "established": established,
                "negotiating": len(self._entries) - established,
                "negotiating_unlisted": sum(self._negotiating_unknown.values()),
                "refused": self._refused,
            }


class Slot:
    """A slot in this process's table (``SlotHandle``)."""

    def __init__(self, table: AssociationSlots, slot_id: int) -> None:
        self.table = table
        self.id = slot_id

    def established(self) -> None:
        """The association was accepted."""
        self.table.established(self.id)

    def release(self) -> None:
        """The connection closed."""
        self.table.release(self.id)
