"""The DICOM listener: a pynetdicom Storage SCP (every storage SOP class) and Verification SCP.

The C-STORE handler only persists: it writes the bytes exactly as they arrived
(file meta + received dataset, no decode/re-encode), fsyncs, and answers.
Zipping and uploading happen in the coordinator, never on the association thread.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
import weakref
from collections.abc import Callable
from io import BytesIO
from typing import Any, cast

from common.uids import strip_padding, uid_problem
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from edge_gateway import dimse_access, pynetdicom_fast_path, reactor_checkpoint
from edge_gateway.association_slots import AssociationSlots, Slot, SlotHandle, SlotPolicy
from edge_gateway.config import GatewayConfig
from edge_gateway.dicom_peek import RoutingUids, Undecodable, routing_uids
from edge_gateway.dispatch import ConnectionDispatcher, Handoff, receive_connection
from edge_gateway.part10 import file_header
from edge_gateway.peer_limits import GuardedSSLSocket, PeerLimits, guarded
from edge_gateway.spool import Spool, SpoolFull

log = logging.getLogger(__name__)
# Told of each newly stored instance: (study UID, series UID, bytes).
StoredCallback = Callable[[str, str, int], None]

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
# PS3.4 B.2.3: A9xx "Data Set does not match SOP Class" for a data set that was read but
# breaks what every storage IOD requires (valid Study/Series/SOP Instance UIDs, PS3.3
# C.7.2.1, C.7.3.1, C.12.1; its SOP Instance UID the one the command names); C2xx "Cannot
# understand" for what cannot be read or used at all (an unparseable data set, a command
# whose Affected SOP Class/Instance UID is no UID). Neither is retried by a PACS.
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210


def _refused(status: int, why: str) -> Dataset:
    """A failure status with its ErrorComment (PS3.7 C.4.2); ``why`` never holds a value (no PHI)."""
    log.warning("C-STORE refused (0x%04X): %s", status, why)
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = why[:64]
    return answer


def lenient_uid(value: Any) -> tuple[bool, str]:
    """pynetdicom's UI validator (``_config.VALIDATORS``): accept any value, so that a command with
    a malformed UID (lenient modalities send 65+ characters) reaches ``handle_store`` and gets a
    failure status there instead of an aborted association."""
    return True, ""


def handle_store(event: evt.Event, spool: Spool, on_stored: StoredCallback) -> int | Dataset:
    """EVT_C_STORE (PS3.4 B.2.2): check the UIDs at the door, spool the bytes as received, answer."""
    request = cast(C_STORE, event.request)
    syntax = str(event.context.transfer_syntax)
    sop_class = strip_padding(str(request.AffectedSOPClassUID or ""))
    sop_instance = strip_padding(str(request.AffectedSOPInstanceUID or ""))
    for name, value in (("Affected SOP Class UID", sop_class), ("Affected SOP Instance UID", sop_instance)):
        problem = uid_problem(value)
        if problem:
            return _refused(CANNOT_UNDERSTAND, f"command's {name}: {problem}")
    dataset = cast(BytesIO, request.DataSet).getbuffer()  # the received bytes, not copied
    try:
        uids = routing_uids(dataset, syntax)
        for name, value in zip(("Study", "Series", "SOP"), uids, strict=True):
            problem = uid_problem(strip_padding(value))
            if problem:
                return _refused(DATASET_MISMATCH, f"{name} Instance UID: {problem}")
        if strip_padding(uids.sop_uid) != sop_instance:
            return _refused(DATASET_MISMATCH, "SOP Instance UID differs from the command's")
        header = file_header(sop_class, sop_instance, syntax)
        return _store(spool, on_stored, uids, header, dataset)
    except (Undecodable, UnicodeError) as exc:  # Undecodable's messages name no value (no PHI)
        return _refused(CANNOT_UNDERSTAND, str(exc) if isinstance(exc, Undecodable) else "UID is not ASCII")
    finally:
        dataset.release()


def _store(
    spool: Spool, on_stored: StoredCallback, uids: RoutingUids, header: bytes, dataset: memoryview
) -> int:
    try:
        stored = spool.store(uids.study_uid, uids.series_uid, uids.sop_uid, header, dataset)
    except SpoolFull as exc:
        log.error("C-STORE refused, spool full (%s): the sender will retry", exc.strerror)
        return OUT_OF_RESOURCES
    except ValueError as exc:
        log.warning("C-STORE refused: %s", exc)
        return CANNOT_UNDERSTAND
    except OSError as exc:
        log.error("C-STORE refused, spool unwritable: %s", exc)
        return OUT_OF_RESOURCES
    if stored:
        on_stored(uids.study_uid, uids.series_uid, len(header) + len(dataset))
    else:
        log.info("duplicate instance in an open series kept once", extra={"sop": uids.sop_uid})
    return SUCCESS


def handle_echo(event: evt.Event) -> int:
    """C-ECHO (Verification SCP, PS3.4 A.4): always Success."""
    return SUCCESS


# Each association's slot, found through its socket while it is open (pynetdicom drops the
# socket when the connection closes).
_SLOTS: weakref.WeakKeyDictionary[Any, SlotHandle] = weakref.WeakKeyDictionary()


def _connection_opened(event: evt.Event) -> None:
    """Nagle's algorithm delays each small C-STORE response by ~40 ms: turn it off; note the slot."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slot = getattr(sock, "slot", None)
        if slot is not None:
            _SLOTS[event.assoc] = slot


def _association_accepted(event: evt.Event) -> None:
    """EVT_ACCEPTED: the slot now holds an established association (its peer is a known one)."""
    slot = _SLOTS.get(event.assoc)
    if slot is not None:
        slot.established()


def _connection_closed(event: evt.Event) -> None:
    """EVT_CONN_CLOSE: free the slot, and end an acceptor still waiting for its A-ASSOCIATE-RQ.

    A peer that closes before its A-ASSOCIATE-RQ is complete takes the state machine from Sta2
    to Sta1 (AA-5, PS3.8 9.2.3) without a primitive for the association's thread, which would
    wait out ``acse_timeout`` holding pynetdicom's count of associations. An empty primitive
    (None, what pynetdicom's queue answers on a timeout) makes it end now.
    """
    slot = _SLOTS.pop(event.assoc, None)
    if slot is not None:
        slot.release()
    dul = event.assoc.dul
    if event.assoc.is_acceptor and dul.state_machine.current_state == "Sta2" and dul.to_user_queue.empty():
        dul.to_user_queue.put(None)  # type: ignore[arg-type]


def tls_context(config: GatewayConfig) -> ssl.SSLContext | None:
    """Server-side TLS (DICOM PS3.15 B.1 style): TLS 1.2+, client certificate required with a CA."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    context.sslsocket_class = GuardedSSLSocket  # PDU limits apply to the decrypted stream
    if config.tls_client_ca:
        context.load_verify_locations(cafile=config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_filter(networks: tuple[str, ...]) -> Callable[[Any, Any], bool]:
    """A socketserver ``verify_request``: only peers inside the given networks may connect."""
    allowed = [ipaddress.ip_network(n, strict=False) for n in networks]

    def verify_request(_request: Any, client_address: Any) -> bool:
        try:
            address = ipaddress.ip_address(client_address[0])
        except (ValueError, TypeError, IndexError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in allowed):
            return True
        log.warning("connection refused: peer address outside allowed_peer_networks")
        return False

    return verify_request


class _NoUidValues(logging.Filter):
    """Drops pynetdicom's UID validation messages: they quote the value (the gateway logs why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Non-conformant '", "Invalid '"))


_NO_UID_VALUES = _NoUidValues()


def tune_pynetdicom(fast_path: bool = True) -> bool:
    """Set up this process's pynetdicom for the gateway; True when the fast path is installed.

    Always: unrestricted storage (private and unknown storage SOP classes: a PACS sends what
    its modalities made), UIDs judged by ``handle_store`` (``lenient_uid``), no per-PDU debug
    handlers (they cost time on every PDU even when not logged), and the race-free reactor
    checkpoint for any association the gateway requests.
    ``fast_path``: ``pynetdicom_fast_path.install()`` (guarded; stock with a warning otherwise);
    False removes it.
    """
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.LOG_HANDLER_LEVEL = "none"
    _config.VALIDATORS["UI"] = lenient_uid
    logging.getLogger("pynetdicom.utils").addFilter(_NO_UID_VALUES)  # a set: added once
    reactor_checkpoint.install()
    if not fast_path:
        pynetdicom_fast_path.remove()
        log.info("C-STORE path: stock pynetdicom (fast_path = false)")
        return False
    return pynetdicom_fast_path.install()


def build_ae(config: GatewayConfig) -> AE:
    """The gateway's pynetdicom AE: Storage and Verification SCP contexts, limits and timeouts."""
    tune_pynetdicom(config.fast_path)
    ae = AE(ae_title=config.ae_title)
    # The slot table (association_slots.py) decides who gets an association; pynetdicom's own
    # count also holds threads still ending after their connection closed: only a backstop.
    ae.maximum_associations = config.max_associations + config.max_negotiating
    ae.maximum_pdu_size = config.max_pdu
    # The acceptor waits this long for the A-ASSOCIATE-RQ primitive; a connection closed by
    # peer_limits frees its slot no later than this.
    ae.acse_timeout = config.negotiation_timeout
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    # An empty list accepts any calling AE title; otherwise pynetdicom rejects the
    # association with "calling AE title not recognised".
    ae.require_calling_aet = list(config.allowed_calling_aets)
    return ae


class GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with two changes.

    - The TLS handshake runs in the connection's own thread (on its first read), not in the
      accepting thread: pynetdicom's ``get_request`` handshakes while accepting, so one
      silent peer would block every other association.
    - Each accepted connection must get a slot from ``slots`` (``association_slots.py``) or is
      closed unread; the slot travels with the connection's socket.
    - With a ``dispatcher`` (``receivers = N``), an accepted connection may be handed to a
      receiver process instead of being served here.
    """

    dispatcher: ConnectionDispatcher | None = None
    peer_limits: PeerLimits | None = None
    slots: AssociationSlots | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection without the TLS handshake (it runs in the connection's thread)."""
        assert self.socket is not None
        return self.socket.accept()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection (or close it unread), then hand it to a receiver process or serve
        it here with the peer limits applied."""
        slot = self.admit(client_address)
        if slot is None:
            self.shutdown_request(request)
            return
        dispatcher = self.dispatcher if isinstance(slot, Slot) else None
        if dispatcher is not None and dispatcher.route(request, client_address, cast(Slot, slot)):
            request.close()  # this process's descriptor only: the receiver serves the connection
            return
        self.serve(request, client_address, slot)

    def admit(self, client_address: Any) -> SlotHandle | None:
        """The connection's slot, or None: close it unread. A server without a slot table
        (one not made by ``start``) serves every connection, uncounted."""
        if self.slots is None:
            return _UNCOUNTED
        return self.slots.admit(str(client_address[0]))

    def serve(self, request: Any, client_address: Any, slot: SlotHandle) -> None:
        """Serve the connection in this process: guard its socket, start its association thread."""
        limits = self.peer_limits
        assert limits is not None  # set by start()
        if self.ssl_context:
            request = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            if isinstance(request, GuardedSSLSocket):
                request.guard(limits, slot)
        else:
            request = guarded(request, limits, slot)
        super().process_request(request, client_address)


class HandoffServer(GatewayServer):
    """In a receiver process: serves the connections the coordinator hands over its channel."""

    handoff: Handoff
    _handed_slot: SlotHandle

    def server_bind(self) -> None:
        """Nothing to bind: connections arrive over the channel."""

    def server_activate(self) -> None:
        """Listen on the coordinator's channel instead of a TCP socket."""
        assert self.socket is not None
        self.socket.close()
        self.socket = self.handoff.channel  # serve_forever() now waits on the channel

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """The next connection the coordinator handed over; CoordinatorGone when it closed the channel."""
        handed = receive_connection(self.handoff.channel)
        if handed is None:
            self.handoff.done.set()
            raise CoordinatorGone("the coordinator closed the channel")
        connection, address, self._handed_slot = handed
        return connection, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve a handed-off connection: the coordinator admitted it and keeps its slot."""
        self.serve(request, client_address, self._handed_slot)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failure to start an association; the server goes on."""
        log.exception("receiver failed to start an association")


class CoordinatorGone(OSError):
    """The coordinator closed the hand-off channel: this receiver has nothing left to do."""


class _Uncounted:
    """The slot of a connection served without a slot table."""

    def established(self) -> None:
        """Nothing to count."""

    def release(self) -> None:
        """Nothing to count."""


_UNCOUNTED = _Uncounted()


def slot_table(config: GatewayConfig) -> AssociationSlots:
    """The slot table for ``config``: known peers are ``known_peer_networks`` and the hosts of
    ``known_aets`` (names resolved once, now; one that does not resolve is left out, logged)."""
    networks = [ipaddress.ip_network(n, strict=False) for n in config.known_peer_networks]
    for peer in dimse_access.parse_known_aets(config.known_aets).values():
        try:
            infos = socket.getaddrinfo(peer.host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            log.warning("known_aets: host of %s does not resolve; not a known peer for slots", peer.ae_title)
            continue
        networks += [ipaddress.ip_network(str(info[4][0])) for info in infos]
    policy = SlotPolicy(
        max_associations=config.max_associations,
        reserved_associations=config.reserved_associations,
        max_negotiating=config.max_negotiating,
        max_negotiating_per_address=config.max_negotiating_per_address,
        known_networks=tuple(networks),
    )
    return AssociationSlots(policy)


def start(
    config: GatewayConfig,
    spool: Spool,
    on_stored: StoredCallback,
    *,
    dispatcher: ConnectionDispatcher | None = None,
    handoff: Handoff | None = None,
    slots: AssociationSlots | None = None,
) -> tuple[AE, AssociationServer]:
    """Serve C-STORE/C-ECHO: listening on the configured port, or (``handoff``) in a receiver process.

    ``slots``: the table admitting connections (``slot_table(config)`` when not given; the
    dispatcher's, with receivers); a receiver process has none (the coordinator admits).
    """
    ae = build_ae(config)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store, [spool, on_stored]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_CONN_OPEN, _connection_opened),
        (evt.EVT_ACCEPTED, _association_accepted),
        (evt.EVT_CONN_CLOSE, _connection_closed),
    ]
    if config.table_name:  # query/retrieve and storage commitment from the cloud archive
        from edge_gateway import dimse_services

        services = dimse_services.DimseServices(config)
        for sop_class, syntaxes in services.contexts():
            ae.add_supported_context(sop_class, syntaxes)
        handlers += services.handlers()
    server_class: type[GatewayServer] = GatewayServer
    if handoff is not None:
        server_class = type("ReceiverServer", (HandoffServer,), {"handoff": handoff})
    elif dispatcher is not None:
        server_class = type("DispatchingServer", (GatewayServer,), {"dispatcher": dispatcher})
    server = ae.make_server(
        (config.host, config.port),
        evt_handlers=handlers,
        ssl_context=tls_context(config),
        server_class=server_class,
    )
    assert server is not None  # non-blocking start always returns the server
    server.peer_limits = PeerLimits(config.max_pdu, config.negotiation_timeout, config.pdu_timeout)  # type: ignore[attr-defined]
    if handoff is None:
        server.slots = slots or slot_table(config)  # type: ignore[attr-defined]
    if config.allowed_peer_networks:
        # socketserver closes the connection before any DICOM byte when this says False.
        server.verify_request = peer_filter(config.allowed_peer_networks)  # type: ignore[method-assign,assignment]
    thread = threading.Thread(target=server.serve_forever, name="edge-dicom-listener", daemon=True)
    thread.start()
    ae._servers.append(server)  # so that ae.shutdown() stops it too
    if handoff is None:
        log.info(
            "DICOM listener on %s:%d%s, AE title %s, calling AE titles: %s, peer networks: %s",
            config.host,
            server.server_address[1],
            " (TLS)" if config.tls_cert else "",
            config.ae_title,
            ", ".join(config.allowed_calling_aets) or "any",
            ", ".join(config.allowed_peer_networks) or "any",
        )
    return ae, server
