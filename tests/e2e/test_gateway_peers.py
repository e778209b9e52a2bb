"""Real peers against the gateway: dcmtk echoscu/storescu/dcmsend, compressed transfer syntaxes, DICOM TLS."""

from __future__ import annotations

import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom.association import Association

from tests.conftest import require_tool
from tests.e2e.conftest import wait_for
from tests.helpers.dicom_factory import pydicom_file, series_from
from tests.helpers.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
    GatewayFactory,
    echo,
    send_files,
    start_gateway_fixture,
    write_files,
)

pytestmark = pytest.mark.e2e
SUCCESS = 0x0000


def dcmtk(tool: str) -> str:
    path = f"/usr/bin/{tool}"  # pynetdicom's console scripts of the same name shadow dcmtk's in a venv
    require_tool(os.access(path, os.X_OK), f"dcmtk {tool}")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, check=False)


def spooled_files(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in root.glob("series/*/*/*.dcm")}


def test_echoscu_verification_and_calling_ae_title(start_gateway: GatewayFactory) -> None:
    echoscu = dcmtk("echoscu")
    gateway = start_gateway(allowed_calling_aets=("PACS",))
    ok = run(echoscu, "-aet", "PACS", "-aec", "EDGE", "127.0.0.1", str(gateway.port))
    assert ok.returncode == 0, ok.stderr
    refused = run(echoscu, "-aet", "INTRUDER", "-aec", "EDGE", "127.0.0.1", str(gateway.port))
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr


@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("CT_small.dcm", []),  # explicit VR little endian, storescu's default proposal
        ("MR_small_RLE.dcm", ["-xr"]),  # RLE lossless
        ("JPEG2000.dcm", ["-xw"]),  # JPEG 2000 (the lossy-capable TS most J2K files use)
        ("JPEG-lossy.dcm", ["-xx"]),  # JPEG extended, 12 bit
        ("MR_small_jpeg_ls_lossless.dcm", ["-xt"]),  # JPEG-LS lossless
    ],
)
def test_storescu_sends_compressed_files_as_they_are(
    start_gateway: GatewayFactory, tmp_path: Path, name: str, flags: list[str]
) -> None:
    # GIVEN a file in some transfer syntax and a gateway that keeps series open for a minute
    storescu = dcmtk("storescu")
    source = pydicom_file(name)
    gateway = start_gateway(stable_after=60.0)

    # WHEN dcmtk storescu sends it with the flag that proposes its transfer syntax
    done = run(storescu, *flags, "-aet", "PACS", "-aec", "EDGE", "127.0.0.1", str(gateway.port), str(source))

    # THEN it is stored in its own transfer syntax with its pixel data (the compressed frames) unchanged.
    # (dcmtk itself may re-encode other elements, e.g. drop group lengths, so whole-dataset byte
    # equality is tested with a sender that sends file bytes unchanged, in test_gateway_durability.)
    assert done.returncode == 0, done.stderr
    assert "unable to convert" not in done.stderr
    original = dcmread(source)
    stored = dcmread(spooled_files(gateway.spool.root)[str(original.SOPInstanceUID)])
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert stored.PixelData == original.PixelData


def test_storescu_without_a_proposal_flag_cannot_send_jpeg2000(start_gateway: GatewayFactory) -> None:
    # Documents the README advice: dcmtk proposes uncompressed syntaxes only unless told otherwise.
    storescu = dcmtk("storescu")
    gateway = start_gateway(stable_after=60.0)
    done = run(
        storescu,
        "-aet",
        "PACS",
        "-aec",
        "EDGE",
        "127.0.0.1",
        str(gateway.port),
        str(pydicom_file("JPEG2000.dcm")),
    )
    assert "unable to convert" in done.stderr
    assert spooled_files(gateway.spool.root) == {}


def test_dcmsend_sends_a_folder_of_mixed_transfer_syntaxes(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    dcmsend = dcmtk("dcmsend")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm"):
        shutil.copy(pydicom_file(name), folder / name)
    gateway = start_gateway(stable_after=60.0)
    done = run(
        dcmsend,
        "-aet",
        "PACS",
        "-aec",
        "EDGE",
        "127.0.0.1",
        str(gateway.port),
        "--scan-directories",
        str(folder),
    )
    assert done.returncode == 0, done.stderr
    expected = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.iterdir()}
    assert set(spooled_files(gateway.spool.root)) == expected


# --- DICOM TLS ------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    require_tool(shutil.which("openssl") is not None, "openssl")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "1", "-subj", "/CN=edge-test-ca", cwd=d)  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


def client_context(pki: Path, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    if with_certificate:
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return context


def test_tls_association_with_client_certificate(
    start_gateway: GatewayFactory, pki: Path, tmp_path: Path
) -> None:
    # GIVEN a gateway with a TLS certificate that requires client certificates from its CA
    gateway = start_gateway(
        tls_cert=str(pki / "server.crt"), tls_key=str(pki / "server.key"), tls_client_ca=str(pki / "ca.crt")
    )
    files = write_files(tmp_path / "ct", series_from("CT_small.dcm", 2))

    # THEN a client with a certificate can echo and store over TLS
    assert echo(gateway.port, ssl_context=client_context(pki, True)) == SUCCESS
    result = send_files(gateway.port, files, ssl_context=client_context(pki, True))
    assert result.statuses == [SUCCESS, SUCCESS]
    # AND a client without a certificate, or speaking plain TCP, gets nothing
    assert echo(gateway.port, ssl_context=client_context(pki, False)) is None
    assert echo(gateway.port) is None


def test_dcmtk_echoscu_over_tls(start_gateway: GatewayFactory, pki: Path) -> None:
    echoscu = dcmtk("echoscu")
    gateway = start_gateway(
        tls_cert=str(pki / "server.crt"), tls_key=str(pki / "server.key"), tls_client_ca=str(pki / "ca.crt")
    )
    args = ["-aet", "PACS", "-aec", "EDGE", "+cf", str(pki / "ca.crt")]
    done = run(echoscu, *args, "+tls", str(pki / "client.key"), str(pki / "client.crt"),
               "127.0.0.1", str(gateway.port))  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_silent_tls_peer_does_not_block_others(start_gateway: GatewayFactory, pki: Path) -> None:
    # GIVEN a TLS gateway and a peer that opens a TCP connection but never starts the handshake
    gateway = start_gateway(
        tls_cert=str(pki / "server.crt"), tls_key=str(pki / "server.key"), tls_client_ca=str(pki / "ca.crt")
    )
    with socket.create_connection(("127.0.0.1", gateway.port)):
        # THEN a well-behaved client still gets its association at once
        assert echo(gateway.port, ssl_context=client_context(pki, True)) == SUCCESS


# ---- hostile or broken peers --------------------------------------------------------------


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed: a read gives end-of-stream or a reset."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_an_associate_rq_declaring_4_gb_is_refused_after_its_header(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a gateway, and a peer whose A-ASSOCIATE-RQ header declares 0xFFFFFFF0 bytes
    gateway = start_gateway()
    sent = 0
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(b"\x01\x00\xff\xff\xff\xf0")
        # WHEN it keeps sending the "body", up to 400 MB
        chunk = b"\x00" * (1 << 20)
        with pytest.raises(OSError):  # the server shut the connection: a send fails
            while sent < 400 * (1 << 20):
                sock.sendall(chunk)
                sent += len(chunk)
        # THEN no more than the kernel's socket buffers got through, and the server closed
        assert sent < 64 * (1 << 20)
        assert _closed_by_server(sock)
    # ... having read the 6 header bytes only
    assert "PDU type 0x01 declares 4294967280 bytes" in caplog.text
    assert "(6 bytes read)" in caplog.text
    assert echo(gateway.port) == SUCCESS  # and it still serves others


def test_trickling_peers_are_cut_and_an_allowed_peer_gets_a_slot(
    start_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a gateway with 2 association slots, and 4 peers each sending one byte of an
    # A-ASSOCIATE-RQ header, then one more byte whenever the previous one was accepted
    gateway = start_gateway(
        max_associations=2, reserved_associations=0, negotiation_timeout=1.0, pdu_timeout=1.0
    )
    tricklers = [socket.create_connection(("127.0.0.1", gateway.port), timeout=30) for _ in range(4)]
    header = b"\x01\x00\x00\x00\x01\x00"
    closed = [False] * len(tricklers)
    sent = [0] * len(tricklers)
    # WHEN they trickle until the server closes each connection (a byte every 0.5 s)
    for _round in range(len(header)):
        for index, sock in enumerate(tricklers):
            if closed[index]:
                continue
            try:
                sock.sendall(header[sent[index] : sent[index] + 1])
                sent[index] += 1
            except OSError:
                closed[index] = True
        if all(closed):
            break
        time.sleep(0.5)
    # THEN the server closed every one before its header was complete
    assert all(_closed_by_server(sock) for sock in tricklers)
    assert max(sent) < len(header)
    assert "took too long to send a PDU" in caplog.text
    for sock in tricklers:
        sock.close()
    # ... and their slots are freed (within negotiation_timeout): an allowed peer associates and stores
    wait_for(lambda: echo(gateway.port) == SUCCESS, 30, "a free association slot")
    files = write_files(tmp_path / "s", series_from("CT_small.dcm", 2))
    assert send_files(gateway.port, files).statuses == [SUCCESS, SUCCESS]


# ---- association slots: kept for known peers ---------------------------------------------------

ASSOCIATE_RQ_START = b"\x01\x00\x00\x00"  # A-ASSOCIATE-RQ, reserved, first 2 bytes of its length


def _hostile(count: int, port: int, first_address: int) -> list[tuple[socket.socket, bytes]]:
    """``count`` connections from 127.0.0.<first_address>.. (two each): every other one silent,
    the others sending the first bytes of an A-ASSOCIATE-RQ header and nothing more."""
    opened = []
    for index in range(count):
        sock = socket.socket()
        sock.bind((f"127.0.0.{first_address + index // 2}", 0))
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sent = ASSOCIATE_RQ_START if index % 2 else b""
        sock.sendall(sent)
        opened.append((sock, sent))
    return opened


def _closed_now(sock: socket.socket) -> bool:
    """The server closed ``sock`` (end of stream or reset waiting), looked at without waiting."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and _closed_by_server(sock)


def _acceptors() -> list[Association]:
    """The gateway's (in this process) association threads still alive."""
    return [t for t in threading.enumerate() if isinstance(t, Association) and t.is_acceptor and t.is_alive()]


def _bytes_read_from(assoc: Association) -> int:
    sock: Any = getattr(assoc.dul.socket, "socket", None)
    return int(getattr(sock, "bytes_read", 0))


def test_silent_and_trickling_sockets_cannot_take_the_slots_of_known_peers(
    start_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a gateway with 6 association slots, 2 of them reserved for its known peers
    # (127.0.0.1), and timeouts far beyond this test: nothing here is freed by a clock
    storescu = dcmtk("storescu")
    gateway = start_gateway(
        known_peer_networks=("127.0.0.1/32",),
        max_associations=6,
        reserved_associations=2,
        max_negotiating=4,
        max_negotiating_per_address=2,
        negotiation_timeout=600.0,
        pdu_timeout=600.0,
    )
    # WHEN 20 silent or trickling connections arrive from 10 addresses that are no known peer
    hostile = _hostile(20, gateway.port, first_address=2)

    # THEN 4 get a slot (negotiating, held open), and the gateway closes the other 16 unread
    closed = wait_for(
        lambda: (found := [s for s, _ in hostile if _closed_now(s)]) and len(found) >= 16 and found,
        30,
        "the gateway to close the connections it has no slot for",
    )
    assert len(closed) == 16
    held = [(s, sent) for s, sent in hostile if s not in closed]
    counts = gateway.status()["associations"]
    assert counts == {"established": 0, "negotiating": 4, "negotiating_unlisted": 4, "refused": 16}
    assert "connection closed unread: no association slot for an unlisted peer" in caplog.text
    # ... having read from the held ones only what they sent (the 4-byte header starts), nothing else
    for sock, _sent in held:
        sock.sendall(b"\x00")  # one more byte each: they are still open, and still trickling
    expected = sum(len(sent) + 1 for _s, sent in held)
    wait_for(lambda: sum(_bytes_read_from(a) for a in _acceptors()) == expected, 30, "bytes read")
    assert len(_acceptors()) == 4

    # ... and while they stay open, the known peer sends over both reserved slots at once:
    # dcmtk storescu and pynetdicom, every instance answered 0x0000
    files = write_files(tmp_path / "s", series_from("CT_small.dcm", 3))
    dcmtk_run = subprocess.Popen(
        [storescu, "-aet", "PACS", "-aec", "EDGE", "127.0.0.1", str(gateway.port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pynetdicom_result = send_files(gateway.port, files)
    _out, err = dcmtk_run.communicate(timeout=60)
    assert dcmtk_run.returncode == 0, err
    assert pynetdicom_result.statuses == [SUCCESS] * 3
    assert not any(_closed_now(s) for s, _ in held)

    # WHEN the held hostile peers close
    for sock, _ in hostile:
        sock.close()
    # THEN their slots are free at once (not after negotiation_timeout) and their threads ended
    wait_for(lambda: not _acceptors(), 30, "the gateway's acceptor threads to end")
    wait_for(
        lambda: gateway.status()["associations"]["negotiating"] == 0 or None, 30, "the slots to be freed"
    )
    assert gateway.status()["associations"]["established"] == 0


def test_a_peer_close_before_its_associate_rq_frees_the_slot_in_a_receiver_process(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # GIVEN a gateway with a receiver process, and 2 silent peers from one unlisted address (its limit)
    gateway = start_gateway(receivers=2, max_negotiating_per_address=2, negotiation_timeout=600.0)
    silent = [sock for sock, _ in _hostile(2, gateway.port, first_address=20)]
    third = _hostile(1, gateway.port, first_address=20)[0][0]
    wait_for(lambda: _closed_now(third) or None, 30, "the third connection to be closed")
    assert gateway.status()["associations"]["negotiating"] == 2
    # WHEN they close (one was served by the receiver process, one by the coordinator)
    for sock in (*silent, third):
        sock.close()
    # THEN both slots are free long before negotiation_timeout: the address may connect again
    wait_for(lambda: gateway.status()["associations"]["negotiating"] == 0 or None, 30, "slots freed")
    again = [sock for sock, _ in _hostile(2, gateway.port, first_address=20)]
    wait_for(lambda: gateway.status()["associations"]["negotiating"] == 2 or None, 30, "slots taken")
    assert not any(_closed_now(s) for s in again)
    for sock in again:
        sock.close()
    files = write_files(tmp_path / "s", series_from("CT_small.dcm", 2))
    assert send_files(gateway.port, files).statuses == [SUCCESS, SUCCESS]
