"""Association slots: known peers keep theirs, other addresses are capped while negotiating."""

from __future__ import annotations

import ipaddress

from edge_gateway.association_slots import AssociationSlots, Slot, SlotPolicy

PACS, SCANNER, OTHER = "10.0.0.2", "192.0.2.7", "192.0.2.8"


def table(**limits: int) -> AssociationSlots:
    settings = {
        "max_associations": 6,
        "reserved_associations": 2,
        "max_negotiating": 3,
        "max_negotiating_per_address": 2,
        **limits,
    }
    return AssociationSlots(SlotPolicy(**settings, known_networks=(ipaddress.ip_network("10.0.0.0/24"),)))


def admitted(slots: AssociationSlots, host: str, count: int) -> list[Slot]:
    got = [slots.admit(host) for _ in range(count)]
    return [s for s in got if s is not None]


def test_an_unlisted_address_gets_at_most_its_share_of_negotiating_slots() -> None:
    slots = table()
    assert len(admitted(slots, SCANNER, 20)) == 2  # per address
    assert len(admitted(slots, OTHER, 20)) == 1  # overall: 3 negotiating from unlisted addresses
    assert slots.counts() == {"established": 0, "negotiating": 3, "negotiating_unlisted": 3, "refused": 37}
    # ... while a known peer still gets every slot left
    assert len(admitted(slots, PACS, 20)) == 3
    assert slots.admit(PACS) is None


def test_reserved_slots_stay_free_for_known_peers() -> None:
    # GIVEN unlisted peers whose associations were accepted (each then leaves the negotiating count)
    slots = table(max_negotiating=10, max_negotiating_per_address=10)
    first = admitted(slots, SCANNER, 10)
    assert len(first) == 4  # 6 slots, 2 reserved
    # THEN the known peer gets the 2 reserved ones, nobody else does
    assert slots.admit(OTHER) is None
    assert len(admitted(slots, PACS, 5)) == 2


def test_an_accepted_association_makes_its_address_known() -> None:
    slots = table()
    [one, _two] = admitted(slots, SCANNER, 3)
    one.established()
    assert slots.is_known(ipaddress.ip_address(SCANNER))
    # the address is now limited only by max_associations
    assert len(admitted(slots, SCANNER, 10)) == 4


def test_a_released_slot_is_free_at_once_and_release_is_idempotent() -> None:
    slots = table()
    pair = admitted(slots, SCANNER, 2)
    assert slots.admit(SCANNER) is None
    pair[0].release()
    pair[0].release()
    assert slots.counts()["negotiating"] == 1
    assert slots.admit(SCANNER) is not None
    assert slots.admit(SCANNER) is None


def test_ipv4_mapped_addresses_count_as_their_ipv4_address() -> None:
    slots = table()
    assert slots.admit("::ffff:10.0.0.2") is not None
    assert slots.is_known(ipaddress.ip_address("10.0.0.2"))
    assert len(admitted(slots, "::ffff:192.0.2.7", 5)) + len(admitted(slots, SCANNER, 5)) == 2


def test_a_dead_receivers_slots_are_freed() -> None:
    slots = table()
    [one, two] = admitted(slots, SCANNER, 2)
    slots.hand_to(one.id, 1)
    slots.hand_to(two.id, 2)
    assert slots.open_by_owner(3) == [0, 1, 1]
    assert slots.release_owner(1) == 1
    assert slots.open_by_owner(3) == [0, 0, 1]
    assert slots.admit(SCANNER) is not None
