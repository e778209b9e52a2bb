"""In-process calls of the query handler with API Gateway v2 events, over the `aws` fixture's moto."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.process import ingest_object
from pydicom.dataset import Dataset

from local_cloud.api_server import http_api_event
from local_cloud.lambda_context import LocalLambdaContext
from tests.conftest import Aws
from tests.helpers.dicom_factory import series_from
from tests.helpers.part_support import put_part

SOP = "00080018"
STUDY = "0020000D"
SERIES = "0020000E"


def uids(reply_json: list[dict[str, dict[str, list[str]]]], tag: str) -> list[str]:
    """The first value of ``tag`` in each DICOM JSON result."""
    return [r[tag]["Value"][0] for r in reply_json]


@dataclass
class Reply:
    """An HTTP answer of the query function: status, headers (lower-case names), body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def from_proxy_result(cls, result: Mapping[str, Any]) -> Reply:
        """Decode an API Gateway proxy result (``statusCode``, ``headers``, ``body`` base64 when
        ``isBase64Encoded``) as API Gateway does before it answers the client."""
        raw = result.get("body") or ""
        data = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
        headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
        return cls(int(result["statusCode"]), headers, data)

    def json(self) -> Any:
        return json.loads(self.body)

    def parts(self) -> list[tuple[str, bytes]]:
        """(content type, content) of each part of a multipart/related body (PS3.18 8.7.1), in order.

        Parsed by the standard library's MIME parser, not by the code under test.
        """
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = email.message_from_bytes(head + self.body, policy=email.policy.HTTP)
        assert message.is_multipart(), self.headers["content-type"]
        return [(part.get_content_type(), part.get_payload(decode=True)) for part in message.iter_parts()]


def stow_request(instances: Iterable[bytes], boundary: str = "B0undary") -> tuple[dict[str, str], bytes]:
    """Headers and body of a STOW-RS request (PS3.18 10.5): one application/dicom part per item."""
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        for data in instances
    )
    headers = {"content-type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    return headers, body + f"--{boundary}--\r\n".encode()


@dataclass
class Api:
    aws: Aws
    claims: dict[str, Any] | None = None
    operations: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Reply:
        from query.handler import lambda_handler

        event = http_api_event(method, path, {"host": "testserver", **(headers or {})}, body, "127.0.0.1")
        if self.claims is not None:
            event["requestContext"]["authorizer"] = {"jwt": self.claims}
        return Reply.from_proxy_result(
            lambda_handler(event, LocalLambdaContext(function_name="QueryFunction"))
        )

    def get(self, path: str, **headers: str) -> Reply:
        return self.call("GET", path, headers)


def make_api(aws: Aws) -> Api:
    os.environ.setdefault("TABLE_NAME", aws.table)
    os.environ.setdefault("BUCKET_NAME", aws.bucket)
    from query import dependencies

    # The module-level clients were built at first import: point them at this test's moto.
    dependencies.store.use(aws.dynamodb, aws.table)
    dependencies.objects.use(aws.s3, aws.bucket)
    return Api(aws)


def index_two_patients(aws: Aws, ct_instances: int) -> tuple[list[Dataset], list[Dataset]]:
    """Index a CT series of Müller^Hans (PID-1, 2024) and an MR instance of Doe^Jane (PID-2, 2023)."""
    ct = series_from("CT_small.dcm", ct_instances)
    mr = series_from("MR_small.dcm", 1)
    for series, name, pid, date in (
        (ct, "Müller^Hans", "PID-1", "20240105"),
        (mr, "Doe^Jane", "PID-2", "20230301"),
    ):
        for ds in series:
            ds.PatientName, ds.PatientID, ds.StudyDate = name, pid, date
    for i, series in enumerate((ct, mr)):
        ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, put_part(aws, series, f"p{i}"))
    return ct, mr
