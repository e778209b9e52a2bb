"""Helpers for the edge gateway tests: a real DICOM sender, a moto server, a gateway process, bucket reads."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, _config

from edge_gateway import reactor_checkpoint
from edge_gateway.config import GatewayConfig
from edge_gateway.gateway import Gateway
from local_cloud.stack import free_port
from tests.conftest import Aws
from tests.e2e.conftest import wait_for
from tests.helpers.processes import stop_process

if TYPE_CHECKING:
    import ssl

    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
MANIFEST = "manifest.json"
GatewayFactory = Callable[..., Gateway]


class AssociationLost(RuntimeError):
    """The peer went away mid-association (no C-STORE response)."""


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class SendResult:
    statuses: list[int] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # each response's Error Comment ('' if none)
    established: bool = True
    lost: bool = False


def send_files(
    port: int,
    paths: Sequence[Path],
    *,
    calling: str = "PACS",
    called: str = "EDGE",
    ssl_context: ssl.SSLContext | None = None,
    after_each: Any = None,
) -> SendResult:
    """C-STORE files over one real association, sending their bytes as they are (no decode/re-encode).

    ``after_each(index, status)`` may raise StopIteration to stop sending. A lost
    association ends the run with ``lost=True``: statuses then hold only acknowledged ones.
    """
    reactor_checkpoint.install()  # stock pynetdicom's requestor may lose a response under load
    result = SendResult()
    contexts: dict[str, set[str]] = {}
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        contexts.setdefault(str(meta.MediaStorageSOPClassUID), set()).add(str(meta.TransferSyntaxUID))
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class, syntaxes in contexts.items():
        for syntax in sorted(syntaxes):
            ae.add_requested_context(sop_class, [syntax])
    tls_args = (ssl_context, "127.0.0.1") if ssl_context is not None else None
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's dataset bytes exactly
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)
        if not assoc.is_established:
            result.established = False
            return result
        try:
            for index, path in enumerate(paths):
                try:
                    rsp = assoc.send_c_store(path)
                except (RuntimeError, OSError):
                    result.lost = True
                    break
                if "Status" not in rsp:
                    result.lost = True
                    break
                result.statuses.append(int(rsp.Status))
                result.comments.append(str(rsp.get("ErrorComment", "")))
                if after_each is not None:
                    try:
                        after_each(index, int(rsp.Status))
                    except StopIteration:
                        break
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return result


def echo(
    port: int, *, calling: str = "PACS", called: str = "EDGE", ssl_context: ssl.SSLContext | None = None
) -> int | None:
    """C-ECHO status, or None when the association was not accepted."""
    reactor_checkpoint.install()
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context("1.2.840.10008.1.1")
    tls_args = (ssl_context, "127.0.0.1") if ssl_context is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a DICOM file, without preamble and file meta."""
    data = path.read_bytes()
    with open(path, "rb") as fh:
        ds = dcmread(fh, stop_before_pixels=True)
        assert ds.file_meta is not None
    # The file meta group length tells where the dataset starts: 128 + 4 + 12 + group length.
    group_length = int(ds.file_meta.FileMetaInformationGroupLength)
    return data[132 + 12 + group_length :]


def write_files(folder: Path, instances: Iterable[Dataset]) -> list[Path]:
    from tests.helpers.dicom_factory import write_series

    return write_series(folder, instances)


def bucket_members(s3: S3Client, bucket: str, prefix: str = "incoming/") -> dict[str, list[str]]:
    """Object key -> SOP Instance UIDs zipped in it (manifest excluded), read back from S3."""
    found: dict[str, list[str]] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                found[obj["Key"]] = [n.removesuffix(".dcm") for n in zf.namelist() if n != MANIFEST]
    return found


def member_bytes(s3: S3Client, bucket: str, key: str, sop_uid: str) -> bytes:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return zf.read(f"{sop_uid}.dcm")


class MotoServer:
    """A moto S3 server on a fixed loopback port that can be stopped and started again (an outage)."""

    def __init__(self, log: Path, bucket: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bucket = bucket
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def s3(self) -> S3Client:
        return boto3.client("s3", region_name=REGION, endpoint_url=self.url)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: listening(self.port) or self.process_died(), 60, "moto server to listen")
        assert not self.process_died(), f"moto server exited, see {self.log}"
        self.s3().create_bucket(Bucket=self.bucket)  # moto keeps everything in memory

    def process_died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@contextmanager
def moto_server(log: Path, bucket: str) -> Iterator[MotoServer]:
    server = MotoServer(log, bucket)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def gateway_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    return env


class GatewayProcess:
    """``python -m edge_gateway run`` as a separate process, on a fixed port, restartable."""

    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config = config
        self.log = log
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_gateway", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=gateway_env(),
            )
        process = self.process
        wait_for(lambda: listening(self.port) or process.poll() is not None, 60, "gateway to listen")
        assert process.poll() is None, f"gateway exited, see {self.log}"

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def spawned_receivers(pid: int) -> list[int]:
    """PIDs of the receiver processes ``pid`` spawned (multiprocessing's spawn, not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def offline_gateway_config(folder: Path, port: int, **settings: Any) -> Path:
    """``folder/gateway.toml`` for a gateway process on 127.0.0.1:``port`` with its spool in
    ``folder``, whose S3 endpoint is a closed port (uploads fail and wait); ``settings`` add or override."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "spool_dir": str(folder / "spool"),
        "bucket": "unused",
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        **settings,
    }
    return write_config(folder / "gateway.toml", **values)


def write_config(path: Path, **settings: Any) -> Path:
    lines = ["[gateway]"]
    for name, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{name} = {str(value).lower()}")
        elif isinstance(value, int | float):
            lines.append(f"{name} = {value}")
        elif isinstance(value, list | tuple):
            lines.append(f"{name} = [{', '.join(repr(str(v)).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f'{name} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def outbox_entries(spool: Path) -> int:
    return len(list((spool / "outbox").glob("*.zip")))


def now() -> float:
    return time.monotonic()


# The gateway's C-STORE path in both modes (config ``fast_path``): every test of an
# in-process gateway runs once with the fast path and once with stock pynetdicom.
MODES = {"fast path": True, "stock pynetdicom": False}


def in_both_modes(fixture: str) -> pytest.MarkDecorator:
    """Run a gateway-process test once per C-STORE path: ``fixture`` (indirect) gets the config's
    ``fast_path`` as ``request.param``, or ``fast_path`` itself when it is the test's argument.

    Only for the process tests whose outcome depends on the DIMSE path (kill -9 mid-association,
    logs written by it, the soak); the others exercise packaging, upload and process handling,
    the same in both modes, and run with the default (fast path) only.
    """
    indirect = fixture != "fast_path"
    return pytest.mark.parametrize(fixture, list(MODES.values()), ids=list(MODES), indirect=indirect)


@pytest.fixture(name="start_gateway", params=list(MODES))
def start_gateway_fixture(
    aws: Aws, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[GatewayFactory]:
    started: list[Gateway] = []
    fast_path = MODES[request.param]

    def start(**settings: Any) -> Gateway:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "bucket": aws.bucket,
            "region": "us-east-1",
            "spool_dir": tmp_path / "spool",
            "stable_after": 0.5,
            "allowed_calling_aets": ("PACS",),
            "fast_path": fast_path,
            # The coordinator alone unless a test asks for more: the processes tests (TOML, the
            # CLI, ``make run``) run the default, one receiver per core.
            "receivers": 1,
            **settings,
        }
        gateway = Gateway(GatewayConfig(**values).validate(), s3=aws.s3)
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@dataclass
class ProxiedUpload:
    """One PUT of an object body under ``incoming/`` (a whole object or one multipart part)."""

    request_line: str
    length: int
    forwarded: int = 0

    @property
    def path(self) -> str:
        """``/<bucket>/incoming/...zip``, without the query (uploadId, partNumber)."""
        return self.request_line.split(" ")[1].split("?")[0]

    @property
    def in_progress(self) -> bool:
        return 0 < self.forwarded < self.length


class TrickleProxy:
    """A TCP proxy in front of an S3 endpoint that trickles PUT bodies under ``incoming/``.

    It reads the client's byte stream as HTTP/1.1 requests with Content-Length bodies (what
    boto3 sends), forwards everything else at once, and sends upload bodies in 16 KB slices
    at ``rate`` bytes/s while ``slow`` is set, so a test can watch an upload in progress
    (``uploads``) and act while it is half-way. Responses are passed back untouched.
    """

    SLICE = 16 * 1024

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.slow = threading.Event()
        self.slow.set()
        self.uploads: list[ProxiedUpload] = []
        self.progress = threading.Condition()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="trickle-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for_upload(self, at_least: int, timeout: float) -> ProxiedUpload:
        """An upload body in progress with at least ``at_least`` bytes through (not all of them)."""
        deadline = time.monotonic() + timeout
        with self.progress:
            while True:
                for upload in reversed(self.uploads):
                    if upload.in_progress and upload.forwarded >= at_least:
                        return upload
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no upload in progress past {at_least} bytes in {timeout:.0f} s")
                self.progress.wait(left)

    def completed(self, path: str) -> int:
        """How many PUT bodies to ``path`` went through completely."""
        with self.progress:
            return sum(1 for u in self.uploads if u.path == path and u.forwarded == u.length)

    def close(self) -> None:
        self._listener.close()
        for sock in list(self._sockets):
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _close(client)
                continue
            self._sockets += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client), daemon=True).start()

    def _responses(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := upstream.recv(65536):
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(client)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                upstream.sendall(head + b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
                remaining = int(headers.get("content-length", "0"))
                upload = None
                if lines[0].startswith("PUT ") and "/incoming/" in lines[0] and remaining:
                    upload = ProxiedUpload(lines[0], remaining)
                    with self.progress:
                        self.uploads.append(upload)
                while remaining:
                    if not buffer:
                        buffer = client.recv(65536)
                        if not buffer:
                            return  # the client went away mid-body
                    slow = upload is not None and self.slow.is_set()
                    size = min(remaining, len(buffer), self.SLICE if slow else len(buffer))
                    piece, buffer = buffer[:size], buffer[size:]
                    if slow:
                        time.sleep(size / self.rate)
                    upstream.sendall(piece)
                    remaining -= size
                    if upload is not None:
                        with self.progress:
                            upload.forwarded += size
                            self.progress.notify_all()
        except OSError:
            pass
        finally:
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
