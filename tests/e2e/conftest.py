"""The real local stack, started as `make run` starts it (``local-cloud run``), on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import pytest

from edge_gateway import reactor_checkpoint
from local_cloud.stack import LocalCloudConfig, free_port
from tests.helpers.browser import chromium
from tests.helpers.processes import stop_process

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
T = TypeVar("T")


@dataclass
class Stack:
    api: str
    moto: str
    dicom_port: int
    bucket: str
    process: subprocess.Popen[bytes]
    log: Path
    viewer: str = ""

    def s3(self) -> S3Client:
        return boto3.client("s3", region_name="us-east-1", endpoint_url=self.moto)

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        """GET on the local API: (status, headers, parsed JSON body or None)."""
        try:
            with urllib.request.urlopen(self.api + path, timeout=30) as response:  # noqa: S310
                body = response.read()
                status, headers = response.status, {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
            headers = {k.lower(): v for k, v in error.headers.items()}
        return status, headers, json.loads(body) if body else None


@pytest.fixture(scope="session", autouse=True)
def race_free_requestor() -> None:
    """Every pynetdicom requestor of the e2e tests (send_files, echo, test_pipeline.send, ...)
    uses the race-free reactor checkpoint: stock 3.0.4 loses a response now and then under load
    (edge_gateway/reactor_checkpoint.py)."""
    assert reactor_checkpoint.install(), "pynetdicom differs from what reactor_checkpoint was written for"


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll until ``probe`` returns something truthy; the pipeline is asynchronous by design."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    OUTPUT.mkdir(exist_ok=True)
    ports = {name: free_port() for name in ("moto", "api", "dicom", "viewer")}
    data_dir = tmp_path_factory.mktemp("local-run")
    log = OUTPUT / "local-stack.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local_cloud",
                "run",
                "--moto-port",
                str(ports["moto"]),
                "--api-port",
                str(ports["api"]),
                "--dicom-port",
                str(ports["dicom"]),
                "--stable-after",
                "1",
                "--data-dir",
                str(data_dir),
                "--viewer-port",
                str(ports["viewer"]),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(
            # The viewer is optional (it needs npm once): its own tests wait for it.
            lambda: (
                all(_listening(p) for n, p in ports.items() if n != "viewer") or process.poll() is not None
            ),
            90,
            "the local stack to listen",
        )
        assert process.poll() is None, f"local stack exited early, see {log}"
        yield Stack(
            api=f"http://127.0.0.1:{ports['api']}",
            moto=f"http://127.0.0.1:{ports['moto']}",
            dicom_port=ports["dicom"],
            bucket=LocalCloudConfig().bucket,
            process=process,
            log=log,
            viewer=f"http://127.0.0.1:{ports['viewer']}",
        )
    finally:
        stop_process(process, signal.SIGINT)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium keeping Chrome's network events (to see the headers the page sends)."""
    with chromium(logs=("performance",)) as driver:
        yield driver
