"""The DICOM listener: a pynetdicom Storage SCP (every storage SOP class) and Verification SCP.

The C-STORE handler only persists: it writes the bytes exactly as they arrived
(file meta + received dataset, no decode/re-encode), fsyncs, and answers.
Zipping and uploading happen in the coordinator, never on the association thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from io import BytesIO
from typing import Any, cast

from common.uids import strip_padding, uid_problem
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from edge_gateway import pynetdicom_fast_path, reactor_checkpoint
from edge_gateway.config import GatewayConfig
from edge_gateway.dicom_peek import RoutingUids, Undecodable, routing_uids
from edge_gateway.dispatch import CLOSED, ConnectionDispatcher, Handoff, receive_connection
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


def _set_nodelay(event: evt.Event) -> None:
    """Nagle's algorithm delays each small C-STORE response by ~40 ms; turn it off."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
    ae.maximum_associations = config.max_associations
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
    - With a ``dispatcher`` (``receivers = N``), an accepted connection may be handed to a
      receiver process instead of being served here.
    """

    dispatcher: ConnectionDispatcher | None = None
    peer_limits: PeerLimits | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection without the TLS handshake (it runs in the connection's thread)."""
        assert self.socket is not None
        return self.socket.accept()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to a receiver process, or serve it here with the peer limits applied."""
        if self.dispatcher is not None and self.dispatcher.route(request, client_address):
            request.close()  # this process's descriptor only: the receiver serves the connection
            return
        limits = self.peer_limits
        if self.ssl_context:
            request = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            if limits is not None and isinstance(request, GuardedSSLSocket):
                request.guard(limits)
        elif limits is not None:
            request = guarded(request, limits)
        super().process_request(request, client_address)


class HandoffServer(GatewayServer):
    """In a receiver process: serves the connections the coordinator hands over its channel."""

    handoff: Handoff

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
        return handed

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failure to start an association; the server goes on."""
        log.exception("receiver failed to start an association")


class CoordinatorGone(OSError):
    """The coordinator closed the hand-off channel: this receiver has nothing left to do."""


def _tell_coordinator(_event: evt.Event, channel: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the coordinator is gone: nobody is counting any more
        channel.send(CLOSED)


def _count_local_close(_event: evt.Event, dispatcher: ConnectionDispatcher) -> None:
    dispatcher.local_closed()


def start(
    config: GatewayConfig,
    spool: Spool,
    on_stored: StoredCallback,
    *,
    dispatcher: ConnectionDispatcher | None = None,
    handoff: Handoff | None = None,
) -> tuple[AE, AssociationServer]:
    """Serve C-STORE/C-ECHO: listening on the configured port, or (``handoff``) in a receiver process."""
    ae = build_ae(config)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store, [spool, on_stored]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_CONN_OPEN, _set_nodelay),
    ]
    if config.table_name:  # query/retrieve and storage commitment from the cloud archive
        from edge_gateway import dimse_services

        services = dimse_services.DimseServices(config)
        for sop_class, syntaxes in services.contexts():
            ae.add_supported_context(sop_class, syntaxes)
        handlers += services.handlers()
    server_class: type[GatewayServer] = GatewayServer
    if handoff is not None:
        handlers.append((evt.EVT_CONN_CLOSE, _tell_coordinator, [handoff.channel]))
        server_class = type("ReceiverServer", (HandoffServer,), {"handoff": handoff})
    elif dispatcher is not None:
        handlers.append((evt.EVT_CONN_CLOSE, _count_local_close, [dispatcher]))
        server_class = type("DispatchingServer", (GatewayServer,), {"dispatcher": dispatcher})
    server = ae.make_server(
        (config.host, config.port),
        evt_handlers=handlers,
        ssl_context=tls_context(config),
        server_class=server_class,
    )
    assert server is not None  # non-blocking start always returns the server
    server.peer_limits = PeerLimits(config.max_pdu, config.negotiation_timeout, config.pdu_timeout)  # type: ignore[attr-defined]
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
