"""Real peers against the gateway: dcmtk echoscu/storescu/dcmsend, compressed transfer syntaxes, DICOM TLS."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

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
    gateway = start_gateway(max_associations=2, negotiation_timeout=1.0, pdu_timeout=1.0)
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
