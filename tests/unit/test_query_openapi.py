"""Schemathesis against the API's own OpenAPI document, in process (WSGI over the Lambda handler): no 5xx."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from local_cloud.api_server import http_api_event
from local_cloud.lambda_context import LocalLambdaContext
from tests.conftest import Aws
from tests.helpers.query_api import Reply, index_two_patients, make_api

REASONS = {
    200: "OK",
    204: "No Content",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The query Lambda behind WSGI, with the same event shape the local API server builds."""
    from query.handler import lambda_handler

    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    target = environ.get("PATH_INFO", "/") + (
        f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else ""
    )
    event = http_api_event(environ["REQUEST_METHOD"], target, headers, body, "127.0.0.1")
    reply = Reply.from_proxy_result(lambda_handler(event, LocalLambdaContext(function_name="QueryFunction")))
    start_response(f"{reply.status} {REASONS.get(reply.status, 'Status')}", list(reply.headers.items()))
    return [reply.body]


@schemathesis.serializer('multipart/related; type="application/dicom"')
def multipart(ctx: Any, value: Any) -> bytes:
    """Whatever was generated, sent as one (usually not DICOM) part."""
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"--x\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--x--\r\n"


@pytest.fixture(scope="module")
def schema(module_aws: Aws) -> Any:
    """The API's OpenAPI document, loaded once (the resolver builds it: seconds), over the module's moto.

    The first test fuzzes an empty table; the second indexes two patients into it first
    (either order keeps both tests' assertions true).
    """
    make_api(module_aws)
    return schemathesis.openapi.from_wsgi("/openapi.json", wsgi_app)


def _fuzz(schema: Any, uids: dict[str, list[str]] | None = None) -> tuple[list[int], list[str]]:
    """Run every operation's generated cases; with ``uids``, every other case names indexed objects
    (the generated path parameters are random strings that would never reach stored data)."""
    failures: list[str] = []
    statuses: list[int] = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case: Any) -> None:
            if uids and case.path_parameters and len(statuses) % 2:
                for name in case.path_parameters:
                    if name in uids:
                        choices = uids[name]
                        case.path_parameters[name] = choices[len(statuses) % len(choices)]
            response = case.call()
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}")

        check()
    return statuses, failures


def test_no_input_gives_a_server_error(schema: Any) -> None:
    statuses, failures = _fuzz(schema)
    assert len(statuses) > 100
    assert {400, 404} <= set(statuses)
    assert failures == []


def test_no_input_gives_a_server_error_with_indexed_data(schema: Any, module_aws: Aws) -> None:
    # GIVEN two indexed patients (a 3-instance CT series and an MR instance)
    ct, mr = index_two_patients(module_aws, 3)
    uids = {
        "study_uid": [ct[0].StudyInstanceUID, mr[0].StudyInstanceUID],
        "series_uid": [ct[0].SeriesInstanceUID, mr[0].SeriesInstanceUID],
        "sop_uid": [ds.SOPInstanceUID for ds in ct] + [mr[0].SOPInstanceUID],
    }
    # WHEN schemathesis sends generated queries, half of them naming those objects in the path
    statuses, failures = _fuzz(schema, uids)
    # THEN stored data was reached (not only errors), and no request got a 5xx
    assert len(statuses) > 100
    assert 200 in statuses
    assert failures == []
