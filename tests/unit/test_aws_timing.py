"""local_cloud.aws_timing: the Server-Timing split of an API request (handler vs AWS calls)."""

from __future__ import annotations

import re
import threading
import urllib.request
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local_cloud.api_server import ApiServer
from local_cloud.aws_timing import AwsCallTimer


def _timed_client(timer: AwsCallTimer) -> Any:
    session = boto3.Session(region_name="us-east-1")
    timer.install(session.events)
    return session.client("dynamodb")


def test_calls_on_the_request_thread_are_summed_and_named() -> None:
    with mock_aws():
        timer = AwsCallTimer()
        client = _timed_client(timer)
        # GIVEN a request in progress on this thread
        timer.start()
        # WHEN it makes a successful call and a failing one
        client.list_tables()
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.get_item(TableName="missing", Key={"pk": {"S": "x"}})
        timing = timer.stop()
    # THEN both are counted by name, and the parts nest: wait <= AWS calls <= handler
    assert dict(timing.operations) == {"ListTables": 1, "GetItem": 1}
    assert 0 < timing.wait_seconds <= timing.aws_seconds <= timing.handler_seconds
    assert "aws;dur=" in timing.header()
    assert 'desc="ListTables 1, GetItem 1"' in timing.header()  # most calls first, then call order


def test_calls_on_other_threads_are_not_counted() -> None:
    with mock_aws():
        timer = AwsCallTimer()
        client = _timed_client(timer)
        # GIVEN a request in progress on this thread
        timer.start()
        # WHEN another thread (the ingest dispatcher, say) calls AWS meanwhile
        other = threading.Thread(target=client.list_tables)
        other.start()
        other.join()
        timing = timer.stop()
    # THEN the request is charged nothing
    assert timing.aws_seconds == 0
    assert not timing.operations


def test_the_api_server_answers_with_a_server_timing_header() -> None:
    with mock_aws():
        timer = AwsCallTimer()
        client = _timed_client(timer)

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            client.list_tables()
            return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "{}"}

        # GIVEN the local API server with a timer and a handler that makes one AWS call
        server = ApiServer("127.0.0.1", 0, handler, timer=timer)
        server.start()
        try:
            # WHEN a client calls it
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/x", timeout=30) as response:
                header = response.headers["Server-Timing"]
        finally:
            server.stop()
    # THEN the response carries the split
    parts = {p.split(";")[0].strip(): p for p in re.split(r",\s*(?=[\w-]+;)", header)}
    assert set(parts) == {"handler", "aws", "aws-wait"}
    assert 'desc="ListTables 1"' in parts["aws"]
