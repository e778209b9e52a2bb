"""Who may do what over DIMSE: the table of known AE titles and the per-AE permissions.

Both come from the gateway configuration as lists of short strings, so that a
hospital IT engineer writes them in the TOML file (or one environment variable):

- ``known_aets = ["WS1=10.0.0.5:104", "PACS=10.0.0.2:11112"]``: where an AE title
  is reached (C-MOVE destinations, storage commitment reports). PS3.4 C.4.2.1.4:
  a C-MOVE to an AE title not in this table fails with 0xA801.
- ``dimse_permissions = ["WS1: find get move=WS1", "PACS: find commit move=*"]``:
  the services each calling AE title may use (``find``, ``get``, ``commit``,
  ``move=<destinations>`` with ``*`` for every known AE). An empty list lets every
  calling AE title that the association checks accepted use every service.

The association-level checks (``allowed_calling_aets``, ``allowed_peer_networks``)
apply first; these permissions only narrow what an accepted peer may ask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_gateway.config import GatewayConfig

AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
SERVICES = ("find", "get", "commit")


class AccessConfigError(ValueError):
    """A ``known_aets`` or ``dimse_permissions`` entry cannot be read; the message names it."""


@dataclass(frozen=True)
class Peer:
    """An AE title and where it listens."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class Permissions:
    """What one calling AE title may do; ``move_to`` None means any known AE."""

    find: bool = False
    get: bool = False
    commit: bool = False
    move_to: frozenset[str] | None = frozenset()

    def may_move_to(self, destination: str) -> bool:
        """Whether this AE may ask for a C-MOVE to ``destination`` (an AE title; PS3.4 C.4.2)."""
        return self.move_to is None or destination in self.move_to


EVERYTHING = Permissions(find=True, get=True, commit=True, move_to=None)
NOTHING = Permissions()


def parse_known_aets(entries: tuple[str, ...]) -> dict[str, Peer]:
    """``"AET=host:port"`` entries as {AE title: Peer}; raises AccessConfigError."""
    peers: dict[str, Peer] = {}
    for entry in entries:
        title, sep, address = entry.partition("=")
        host, colon, port = address.strip().rpartition(":")
        title = title.strip()
        if not sep or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise AccessConfigError(f"known_aets: {entry!r} is not AET=host:port")
        if not AE_TITLE.match(title):
            raise AccessConfigError(f"known_aets: {title!r} is not an AE title")
        peers[title] = Peer(title, host.strip("[]"), int(port))
    return peers


def parse_permissions(entries: tuple[str, ...]) -> dict[str, Permissions]:
    """``"AET: find get commit move=A,B"`` entries as {AE title: Permissions}; raises AccessConfigError."""
    table: dict[str, Permissions] = {}
    for entry in entries:
        title, sep, rest = entry.partition(":")
        title = title.strip()
        if not sep or not AE_TITLE.match(title):
            raise AccessConfigError(f"dimse_permissions: {entry!r} is not 'AET: services'")
        granted: dict[str, bool] = dict.fromkeys(SERVICES, False)
        move_to: set[str] | None = set()
        for word in rest.split():
            name, _, value = word.partition("=")
            if name in SERVICES and not value:
                granted[name] = True
            elif name == "move" and value:
                targets = {t.strip() for t in value.split(",") if t.strip()}
                if "*" in targets:
                    move_to = None
                elif move_to is not None:
                    move_to |= targets
            else:
                raise AccessConfigError(
                    f"dimse_permissions: {word!r} in {title!r} is not find, get, commit or move=AET,..."
                )
        table[title] = Permissions(
            find=granted["find"],
            get=granted["get"],
            commit=granted["commit"],
            move_to=None if move_to is None else frozenset(move_to),
        )
    return table


@dataclass(frozen=True)
class AccessTable:
    """Known peers and permissions, read once from the configuration."""

    peers: dict[str, Peer]
    permissions: dict[str, Permissions]

    @classmethod
    def from_config(cls, config: GatewayConfig) -> AccessTable:
        """The table from the ``known_aets`` and ``dimse_permissions`` settings; raises AccessConfigError."""
        return cls(parse_known_aets(config.known_aets), parse_permissions(config.dimse_permissions))

    def of(self, calling_aet: str) -> Permissions:
        """The permissions of a calling AE title (trailing spaces ignored)."""
        if not self.permissions:
            return EVERYTHING
        return self.permissions.get(calling_aet.strip(), NOTHING)


def config_problems(config: GatewayConfig) -> list[str]:
    """Messages naming each invalid query/retrieve setting (empty when all is well)."""
    problems: list[str] = []
    try:
        table = AccessTable.from_config(config)
    except AccessConfigError as exc:
        return [str(exc)]
    for title, perms in table.permissions.items():
        unknown = sorted((perms.move_to or frozenset()) - set(table.peers))
        if unknown:
            problems.append(f"dimse_permissions: {title} may move to {', '.join(unknown)}, not in known_aets")
    if config.max_find_matches <= 0:
        problems.append("max_find_matches: must be positive")
    if config.retrieve_cache_bytes < 0:
        problems.append("retrieve_cache_bytes: 0 (off) or more")
    if config.commitment_wait <= 0:
        problems.append("commitment_wait: must be a positive number of seconds")
    return problems
