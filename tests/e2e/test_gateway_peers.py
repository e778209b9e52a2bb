"""Real peers against the gateway: dcmtk echoscu/storescu/dcmsend, compressed transfer syntaxes, DICOM TLS."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.conftest import require_tool
from tests.dicom_factory import pydicom_file, series_from
from tests.e2e.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
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
