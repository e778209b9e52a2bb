"""Where an API request's time goes on the stand-in: the query function's own code or AWS calls.

``local-cloud run --server-timing`` registers botocore event hooks on boto3's default
session before the query function creates its clients, and the API server answers
each request with a ``Server-Timing`` header (W3C Server Timing; the stand-in's own
diagnostic, API Gateway sends no such header):

    Server-Timing: handler;dur=41.2, aws;dur=33.0;desc="Query 2, GetItem 1", aws-wait;dur=29.9

- ``handler``: wall time of ``lambda_handler`` for this request (what Lambda would bill);
- ``aws``: the part of it spent inside botocore calls, from ``provide-client-params`` to
  ``after-call`` (serialising, signing, the HTTP round trip, parsing), with the operations;
- ``aws-wait``: the part of ``aws`` between ``before-send`` and ``before-parse``: sending the
  request and waiting for moto's answer (moto's own work, in its own process, is in here).

So ``handler - aws`` is the function's own code, and ``aws-wait`` is mostly the emulator,
which DynamoDB and S3 would replace with their own latency. Response bodies that the
function streams itself (S3 GetObject) are read after ``after-call``: that read counts as
the function's code. Timings are kept per thread (the API server serves each request on
its own thread); calls made on other threads (the ingest dispatcher) are not counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_CONTEXT_KEY = "local_cloud_call_started"


@dataclass
class RequestTiming:
    """Where one request's time went, in seconds, and the AWS operations it called."""

    handler_seconds: float = 0.0
    aws_seconds: float = 0.0
    wait_seconds: float = 0.0
    operations: Counter[str] = field(default_factory=Counter)

    def header(self) -> str:
        """The timing as a ``Server-Timing`` header value (durations in ms)."""
        calls = ", ".join(f"{op} {n}" for op, n in self.operations.most_common())
        return (
            f"handler;dur={self.handler_seconds * 1000:.2f}, "
            f'aws;dur={self.aws_seconds * 1000:.2f};desc="{calls}", '
            f"aws-wait;dur={self.wait_seconds * 1000:.2f}"
        )


class AwsCallTimer:
    """Sums, per thread, the time spent in botocore calls and in their HTTP round trips."""

    def __init__(self) -> None:
        self._local = threading.local()

    def install(self, events: Any) -> None:
        """Register on a botocore event emitter; clients created afterwards inherit the hooks."""
        events.register("provide-client-params.*.*", self._call_started)
        events.register("after-call.*.*", self._call_ended)
        events.register("after-call-error.*.*", self._call_ended)
        events.register("before-send.*.*", self._send_started)
        events.register("before-parse.*.*", self._response_arrived)

    def install_on_default_session(self) -> None:
        """Before the query function's ``boto3.client(...)`` calls: they copy the session's hooks."""
        import boto3

        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        self.install(boto3.DEFAULT_SESSION.events)

    def start(self) -> None:
        """Start timing a request on this thread."""
        self._local.timing = RequestTiming()
        self._local.started = time.perf_counter()

    def stop(self) -> RequestTiming:
        """End this thread's request and return its timing."""
        timing: RequestTiming = self._local.timing
        timing.handler_seconds = time.perf_counter() - self._local.started
        self._local.timing = None
        return timing

    def _current(self) -> RequestTiming | None:
        return getattr(self._local, "timing", None)

    def _call_started(self, context: dict[str, Any], **_: Any) -> None:
        if self._current() is not None:
            context[_CONTEXT_KEY] = time.perf_counter()

    def _call_ended(self, context: dict[str, Any], event_name: str, **_: Any) -> None:
        timing, started = self._current(), context.pop(_CONTEXT_KEY, None)
        if timing is not None and started is not None:
            timing.aws_seconds += time.perf_counter() - started
            timing.operations[event_name.rsplit(".", 1)[-1]] += 1

    def _send_started(self, **_: Any) -> None:
        if self._current() is not None:
            self._local.sent = time.perf_counter()

    def _response_arrived(self, **_: Any) -> None:
        timing, sent = self._current(), getattr(self._local, "sent", None)
        if timing is not None and sent is not None:
            timing.wait_seconds += time.perf_counter() - sent
            self._local.sent = None
