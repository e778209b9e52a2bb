"""Shared fixtures: fake AWS credentials, an in-process moto with the template's table, DICOM test data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def _template_resources() -> Aws:
    s3 = boto3.client("s3", region_name=REGION)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    dynamodb.create_table(**table_definition(load_template(), TABLE))
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
