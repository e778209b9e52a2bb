"""Typed gateway configuration: a TOML file, then ``EDGE_GATEWAY_*`` environment variables, then flags.

Every field has a production default suited to a hospital network; the local
stand-in overrides a few (quiet period, calling AE titles). Validation happens
once, at start, with messages that name the offending setting.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from edge_gateway import dimse_access

ENV_PREFIX = "EDGE_GATEWAY_"
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash
GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
AUTO_RECEIVERS_MAX = 8


class ConfigError(ValueError):
    """The configuration is invalid; the message names the setting."""


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's settings: TOML file, then ``EDGE_GATEWAY_*`` environment, then CLI flags."""

    # DICOM listener
    host: str = "0.0.0.0"  # noqa: S104 - a PACS on the hospital network must reach the box
    port: int = 11112
    ae_title: str = "EDGE"
    # Calling AE titles allowed to associate; empty means any (local mode only).
    allowed_calling_aets: tuple[str, ...] = ()
    # Peer IP networks allowed to connect (CIDR, e.g. "10.1.2.0/24"); empty means any.
    allowed_peer_networks: tuple[str, ...] = ()
    max_pdu: int = 262_144  # also the largest P-DATA-TF PDU accepted: longer ones close the connection
    max_associations: int = 16  # open connections for the whole gateway (every receiver process)
    # Association slots (edge_gateway/association_slots.py), decided at connect, nothing read:
    # known peers (these networks, the hosts of known_aets, addresses that had an association
    # accepted since start) may use all max_associations; other addresses leave the last
    # reserved_associations free, and may have at most max_negotiating connections still
    # negotiating at once (max_negotiating_per_address from one address).
    known_peer_networks: tuple[str, ...] = ()
    reserved_associations: int = 4
    max_negotiating: int = 8
    max_negotiating_per_address: int = 4
    # A peer must complete its A-ASSOCIATE-RQ this many seconds after connecting, and each PDU
    # this many seconds after its first byte; otherwise the connection is closed (slot freed).
    negotiation_timeout: float = 10.0
    pdu_timeout: float = 60.0
    # Processes serving the port (each connection goes to the least busy): 0 = one per usable CPU
    # core (at most AUTO_RECEIVERS_MAX), 1 = the coordinator only. pynetdicom's C-STORE path holds
    # the GIL (~1 ms of Python per 0.5 MB instance, plus the kernel's share): one process tops out
    # with two or more senders at once. A lone association is always served by the coordinator.
    receivers: int = 0
    # The C-STORE fast path inside pynetdicom (edge_gateway/pynetdicom_fast_path.py); false runs
    # stock pynetdicom (slower, same answers). A pynetdicom the guard does not know runs stock anyway.
    fast_path: bool = True
    # DICOM TLS: a PEM certificate (chain) and key turn it on; tls_client_ca makes a
    # client certificate signed by that CA mandatory.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Series assembly: a series is closed after this many quiet seconds (Orthanc's
    # StableAge idea), or earlier when a part reaches either limit.
    stable_after: float = 60.0
    max_part_instances: int = 5_000
    max_part_bytes: int = 4 * 1024**3
    # Spool on local disk
    spool_dir: Path = Path("/var/lib/edge-gateway/spool")
    max_spool_bytes: int = 50 * 1024**3
    # Upload
    gateway_id: str = "edge"
    bucket: str = ""
    region: str = "eu-central-1"
    endpoint_url: str = ""  # empty: AWS; the local stand-in sets http://127.0.0.1:5000
    kms_key_id: str = ""  # empty: the bucket's default encryption
    deflate: bool = False  # DICOM pixel data is often compressed already: store by default
    multipart_threshold: int = 64 * 1024**2
    shipped_retention_days: float = 7.0
    # Failed uploads retry after a full-jitter delay in [0, min(cap, base * 2**failures)].
    upload_backoff_base: float = 1.0
    upload_backoff_cap: float = 300.0
    log_format: str = "text"  # or "json"
    log_level: str = "INFO"
    # Query/retrieve and storage commitment from the cloud archive (edge_gateway.dimse_services).
    table_name: str = ""  # the stack's index table (TableName output); empty: these services are off
    query_sites: tuple[str, ...] = ()  # sites answered; empty: this gateway's own (gateway_id)
    max_find_matches: int = 1000  # a C-FIND with more matches ends with 0xA700 after this many
    # Known peers, "AET=host:port": C-MOVE destinations and where commitment reports go.
    known_aets: tuple[str, ...] = ()
    # Per calling AE title, "AET: find get commit move=DEST1,DEST2" (move=* any known AE);
    # empty: every accepted calling AE may use every service.
    dimse_permissions: tuple[str, ...] = ()
    commitment_wait: float = 3600.0  # seconds an instance may take to be shipped and indexed
    # Instances retrieved from the archive are kept next to the spool (<spool_dir>/../retrieve-cache),
    # least recently used out first; 0 turns the cache off.
    retrieve_cache_bytes: int = 5 * 1024**3

    @property
    def receiver_processes(self) -> int:
        """Processes serving the DICOM port, the coordinator included: ``receivers``, or for 0 the
        CPU cores this process may run on (``os.sched_getaffinity``), 1 to ``AUTO_RECEIVERS_MAX``."""
        if self.receivers:
            return self.receivers
        return max(1, min(AUTO_RECEIVERS_MAX, len(os.sched_getaffinity(0))))

    def validate(self, spool_only: bool = False) -> GatewayConfig:
        """Raise ConfigError naming every bad setting; ``spool_only``: no upload settings needed."""
        problems: list[str] = []
        if not 0 <= self.port < 65536:
            problems.append(f"port: {self.port} is not a TCP port (0 picks a free one)")
        titles = [("ae_title", self.ae_title)]
        titles += [("allowed_calling_aets", aet) for aet in self.allowed_calling_aets]
        for name, value in titles:
            if not AE_TITLE.match(value):
                problems.append(f"{name}: {value!r} is not an AE title (1-16 printable characters)")
        if not GATEWAY_ID.match(self.gateway_id):
            problems.append("gateway_id: letters, digits, '-' and '_' only (it is part of object keys)")
        if not self.bucket and not spool_only:
            problems.append("bucket: required (the S3 bucket the stack created)")
        if self.stable_after <= 0:
            problems.append("stable_after: must be a positive number of seconds")
        if self.max_pdu and self.max_pdu < 4096:
            problems.append("max_pdu: at least 4096 bytes, or 0 for unlimited")
        for name in ("max_associations", "max_part_instances", "max_part_bytes", "max_spool_bytes"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}: must be positive")
        if not 0 <= self.receivers <= 64:
            problems.append("receivers: 1 to 64 processes, or 0 for one per CPU core")
        problems += self._network_problems()
        problems += dimse_access.config_problems(self)
        if self.log_format not in ("text", "json"):
            problems.append("log_format: 'text' or 'json'")
        if problems:
            raise ConfigError("invalid gateway configuration:\n  " + "\n  ".join(problems))
        return self

    def _network_problems(self) -> list[str]:
        """Peer networks, TLS files and upload backoff."""
        problems: list[str] = []
        for name in ("allowed_peer_networks", "known_peer_networks"):
            for network in getattr(self, name):
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    problems.append(f"{name}: {network!r} is not an IP network (e.g. 10.0.0.0/8)")
        if not 0 <= self.reserved_associations < self.max_associations:
            problems.append("reserved_associations: 0 or more, fewer than max_associations")
        if self.max_negotiating < 1 or self.max_negotiating_per_address < 1:
            problems.append("max_negotiating, max_negotiating_per_address: at least 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key: give both, or neither")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls_client_ca: needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                problems.append(f"{name}: {value} is not a readable file")
        if self.negotiation_timeout <= 0 or self.pdu_timeout <= 0:
            problems.append("negotiation_timeout, pdu_timeout: positive numbers of seconds")
        if self.upload_backoff_base <= 0 or self.upload_backoff_cap < self.upload_backoff_base:
            problems.append("upload_backoff_base/cap: base > 0 and cap >= base")
        return problems

    def public(self) -> dict[str, Any]:
        """The settings as plain values, for logs and ``status``."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def _convert(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return text in ("1", "true", "yes", "on")
        if isinstance(default, tuple):
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        if isinstance(default, Path):
            return Path(str(raw)).expanduser()
        if isinstance(raw, bool) or (isinstance(default, int) and isinstance(raw, float)):
            raise ValueError(raw)  # int(2.7) and int(True) would quietly read 2 and 1
        return type(default)(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot read {raw!r} as {type(default).__name__}") from exc


def load(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    spool_only: bool = False,
) -> GatewayConfig:
    """Defaults < TOML file < environment < explicit overrides (CLI flags); then validate.

    ``spool_only``: for commands that only touch the spool (``status``, ``import``), which
    need no bucket.
    """
    config = GatewayConfig()
    defaults = {f.name: getattr(config, f.name) for f in fields(GatewayConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        section = data.get("gateway", data)
        unknown = sorted(set(section) - set(defaults))
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
        values.update(section)
    env = os.environ if environ is None else environ
    for name in defaults:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    converted = {k: _convert(k, v, defaults[k]) for k, v in values.items()}
    return replace(config, **converted).validate(spool_only)
