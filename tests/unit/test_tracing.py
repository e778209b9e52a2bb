"""X-Ray tracing: active in a deployed function (subsegments reach the daemon), not even imported elsewhere.

Each case runs the query function in a fresh interpreter, because the tracer is chosen
when ``common.observability`` is imported (see its docstring and bench/query_cold_start.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from common.observability import UnrecordedProvider, tracing_active

# A sampled trace header as Lambda sets it for an invocation under `Tracing: Active`.
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

# One search through the real handler, over an in-process moto with the template's table.
INVOKE = """
import json, sys
from common.observability import tracer
from local_cloud.api_server import http_api_event
from local_cloud.lambda_context import LocalLambdaContext
from local_cloud.template import load_template, table_definition
from moto import mock_aws
from query.handler import lambda_handler
from query import dependencies

with mock_aws():
    dependencies.store.use(dependencies.dynamodb, "t")
    dependencies.dynamodb.create_table(**table_definition(load_template(), "t"))
    event = http_api_event("GET", "/dicomweb/studies", {"host": "testserver"}, b"", "127.0.0.1")
    reply = lambda_handler(event, LocalLambdaContext(function_name="QueryFunction"))
print(json.dumps({
    "status": reply["statusCode"],
    "provider": type(tracer.provider).__module__,
    "xray_imported": "aws_xray_sdk.core" in sys.modules,
}))
"""


def _run(env: dict[str, str]) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k not in ("POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL")}
    done = subprocess.run(
        [sys.executable, "-c", INVOKE],
        env={
            **base,
            "TABLE_NAME": "t",
            "BUCKET_NAME": "b",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_SERVICE_NAME": "query",
            "POWERTOOLS_DEV": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _entities(daemon: socket.socket) -> list[dict[str, Any]]:
    """Every segment document the X-Ray SDK sent to the daemon address (UDP, header line + JSON)."""
    found = []
    daemon.settimeout(0.5)
    while True:
        try:
            datagram = daemon.recv(65536)
        except TimeoutError:
            return found
        header, _, body = datagram.partition(b"\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        found.append(json.loads(body))


def test_deployed_function_sends_handler_and_botocore_subsegments(tmp_path: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        port = daemon.getsockname()[1]
        result = _run(
            {
                "LAMBDA_TASK_ROOT": str(tmp_path),
                "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
                "_X_AMZN_TRACE_ID": TRACE_HEADER,
            }
        )
        entities = _entities(daemon)
    assert result == {"status": 204, "provider": "aws_xray_sdk.core.async_recorder", "xray_imported": True}
    by_name = {e["name"]: e for e in entities}
    handler = by_name["## lambda_handler"]
    assert handler["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert handler["annotations"] == {"ColdStart": True, "Service": "query"}
    # botocore is patched: the DynamoDB read is its own subsegment, under the handler's.
    reads = [e for e in entities if e["name"] == "dynamodb" and e["aws"]["operation"] != "CreateTable"]
    assert reads, entities
    assert {(e["namespace"], e["parent_id"]) for e in reads} == {("aws", handler["id"])}


@pytest.mark.parametrize(
    "env",
    [
        {},  # tests, the local stand-in: no Lambda runtime
        {"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"},
        {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"},
    ],
)
def test_tracing_inactive_imports_no_xray_sdk(env: dict[str, str]) -> None:
    assert not tracing_active(env)
    result = _run(env)
    assert result == {"status": 204, "provider": UnrecordedProvider.__module__, "xray_imported": False}


def test_tracing_active_rule() -> None:
    assert tracing_active({"LAMBDA_TASK_ROOT": "/var/task"})
    assert tracing_active({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"})
    assert not tracing_active({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"})
    assert not tracing_active({"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"})
