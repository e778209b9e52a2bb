"""Shared fixtures: fake AWS credentials, an in-process moto with the template's table, DICOM test data."""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from local_cloud.template import load_template, table_definition

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
BUCKET = "dicom-test"
TABLE = "dicom-index-test"
CI = os.environ.get("CI", "").lower() == "true"


def require_tool(available: bool, what: str) -> None:
    """Skip when a tool is missing locally; in CI a missing tool is a failure, never a skip."""
    if available:
        return
    if CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is not available")
    pytest.skip(f"{what} not available")


def _use_fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(autouse=True)
def _fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_fake_aws_credentials(monkeypatch)


@dataclass
class Aws:
    s3: S3Client
    dynamodb: DynamoDBClient
    bucket: str = BUCKET
    table: str = TABLE


@functools.cache
def _boto_session() -> boto3.session.Session:
    """One boto3 session for the fixtures' clients, so botocore reads its endpoint and service
    model files once per run: moto resets boto3's default session at every start, which made
    each test's two clients cost a few hundred milliseconds."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@functools.cache
def _table_definition() -> dict[str, Any]:
    """The table as template.yaml declares it (parsing the template is ~0.2 s: once per run)."""
    return table_definition(load_template(), TABLE)


def _template_resources() -> Aws:
    session = _boto_session()
    s3 = session.client("s3")
    dynamodb = session.client("dynamodb")
    s3.create_bucket(Bucket=BUCKET)
    dynamodb.create_table(**copy.deepcopy(_table_definition()))
    return Aws(s3, dynamodb)


@pytest.fixture(scope="module")
def module_aws() -> Iterator[Aws]:
    """One in-process moto for a whole module of read-only tests: its data is indexed once.

    A module using it must not also use ``aws``: starting a second moto resets every backend.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use_fake_aws_credentials(monkeypatch)
        with mock_aws():
            yield _template_resources()


@pytest.fixture
def aws() -> Iterator[Aws]:
    """In-process moto with the bucket and the table exactly as template.yaml declares it."""
    with mock_aws():
        yield _template_resources()


@pytest.fixture
def endpoint() -> Iterator[str]:
    """A moto server (``http://127.0.0.1:<port>``) of its own on a free loopback port, from an
    empty account (moto's backends are global to the process), stopped after the test."""
    import socket
    import urllib.request

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))  # noqa: S310
    try:
        yield url
    finally:
        server.stop()
