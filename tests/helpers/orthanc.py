"""Orthanc (the Debian package) as a hospital PACS, and the loopback plumbing around it.

Used by the Orthanc e2e helpers (orthanc_push, orthanc_qr) and the benchmarks that put
Orthanc next to the gateway (bench/gateway_soak.py, bench/query_retrieve.py). Orthanc
binds every interface: start it only inside a private network namespace (``unshare -n``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.helpers.processes import stop_process

ORTHANC = "/usr/sbin/Orthanc"


def http(method: str, url: str, body: bytes | None = None, timeout: float = 120) -> Any:
    """One request to a loopback REST API (Orthanc's, the local stack's): the JSON answer or None.

    Raises ``urllib.error.HTTPError`` on a 4xx/5xx and ``OSError`` when nothing listens.
    """
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - loopback test URL
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        data = response.read()
    return json.loads(data) if data else None


def ready(url: str) -> bool:
    """True when a GET of ``url`` answers 2xx (raises ``OSError`` while nothing listens)."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test URL
        return bool(response.status < 300)


def listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``probe`` (an ``OSError`` counts as not yet) until it returns something truthy.

    Returns that value; raises ``SystemExit`` naming ``what`` after ``timeout`` seconds
    (these helpers run as the main program of a namespace or a benchmark).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = probe()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def write_config(
    work: Path,
    ports: Mapping[str, int],
    aet: str,
    modalities: Mapping[str, tuple[str, str, int]],
    name: str = "hospital-pacs",
    **options: Any,
) -> Path:
    """Write ``work/orthanc.json``: storage under ``work``, loopback REST without authentication.

    ``ports["orthanc_dicom"]`` and ``ports["orthanc_http"]``: Orthanc's DICOM and REST ports.
    ``modalities``: Orthanc's name of a peer -> (AE title, host, port). ``options``: more
    Orthanc settings (e.g. ``DicomAlwaysAllowFind=True``). Returns the file's path.
    """
    config = work / "orthanc.json"
    settings = {
        "Name": name,
        "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"),
        "DicomAet": aet,
        "DicomPort": ports["orthanc_dicom"],
        "HttpPort": ports["orthanc_http"],
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomModalities": {key: list(peer) for key, peer in modalities.items()},
        **options,
    }
    config.write_text(json.dumps(settings))
    return config


def start(config: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start Orthanc with ``config``, its output in ``orthanc.log`` next to it (stop with ``stop``)."""
    with open(config.parent / "orthanc.log", "wb") as log:
        return subprocess.Popen(
            [ORTHANC, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
        )


def local_stack_command(ports: Mapping[str, int], data_dir: Path, stable_after: float = 1) -> list[str]:
    """``local-cloud run`` as ``make run`` starts it, on ``ports["moto"]``, ``["api"]``, ``["dicom"]``.

    Without the OHIF viewer: these runs do not use it, and inside a network namespace its
    first fetch from the npm registry can only fail after a timeout, holding up the gateway.
    """
    return [
        sys.executable, "-m", "local_cloud", "run",
        "--moto-port", str(ports["moto"]),
        "--api-port", str(ports["api"]),
        "--dicom-port", str(ports["dicom"]),
        "--stable-after", f"{stable_after:g}",
        "--data-dir", str(data_dir),
        "--no-viewer",
    ]  # fmt: skip


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGINT each process in turn (a clean shutdown), then SIGKILL what is still up after ``timeout`` s."""
    for process in processes:
        stop_process(process, signal.SIGINT, timeout)
