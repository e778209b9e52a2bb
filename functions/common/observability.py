"""Powertools logger, tracer and metrics, defined once and imported by both functions.

Logs never carry PHI: UIDs, counts and reasons only, never names, IDs or dates.

The tracer sends X-Ray segments only where tracing can be active: in a deployed Lambda
function (``Tracing: Active`` in template.yaml) without ``POWERTOOLS_TRACE_DISABLED``.
There it patches botocore alone (the only I/O library the functions use), not every
library the X-Ray SDK knows. Anywhere else (tests, the local stand-in, ``sam local``) it
is a Powertools ``Tracer`` over a provider that records nothing, so importing a handler
does not import the X-Ray SDK, whose recorder builds a botocore session and an X-Ray
client at import (about half of the query function's cold start, see
``bench/query_cold_start.py``). The decorators and ``put_*`` calls are the same in both.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

# The libraries whose calls become X-Ray subsegments (DynamoDB and S3 via boto3).
PATCHED_MODULES = ("botocore",)
_TRUTHY = {"1", "true", "on", "yes", "y", "t"}


def tracing_active(environ: Mapping[str, str] = os.environ) -> bool:
    """True when X-Ray can record this process: a Lambda runtime, not ``sam local``/Chalice, not disabled.

    The rule Powertools' ``Tracer`` applies itself (``LAMBDA_TASK_ROOT`` set,
    ``AWS_SAM_LOCAL`` and ``AWS_CHALICE_CLI_MODE`` unset, ``POWERTOOLS_TRACE_DISABLED``
    not truthy), decided before the X-Ray SDK is imported.
    """
    if environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUTHY:
        return False
    if environ.get("AWS_SAM_LOCAL") or environ.get("AWS_CHALICE_CLI_MODE"):
        return False
    return bool(environ.get("LAMBDA_TASK_ROOT"))


class _UnrecordedSegment(BaseSegment):
    """A segment that records nothing (tracing inactive)."""

    def close(self, end_time: int | None = None) -> None:
        """Nothing to close."""

    def add_subsegment(self, subsegment: Any) -> None:
        """Dropped."""

    def remove_subsegment(self, subsegment: Any) -> None:
        """Nothing to remove."""

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        """Dropped."""

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        """Dropped."""

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        """Dropped (the logger records the exception)."""


class UnrecordedProvider(BaseProvider):
    """Powertools tracing provider that records nothing and imports no tracing SDK."""

    @contextlib.contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        """Yield a segment that records nothing."""
        yield _UnrecordedSegment()

    @contextlib.asynccontextmanager
    async def in_subsegment_async(
        self, name: str | None = None, **kwargs: Any
    ) -> AsyncGenerator[BaseSegment, None]:
        """Yield a segment that records nothing."""
        yield _UnrecordedSegment()

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        """Dropped."""

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        """Dropped."""

    def patch(self, modules: Sequence[str]) -> None:
        """Nothing to patch."""

    def patch_all(self) -> None:
        """Nothing to patch."""


def build_tracer(environ: Mapping[str, str] = os.environ) -> Tracer:
    """The functions' ``Tracer``: X-Ray with botocore patched when ``tracing_active``, else unrecorded."""
    if tracing_active(environ):
        return Tracer(patch_modules=PATCHED_MODULES)
    return Tracer(disabled=True, auto_patch=False, provider=UnrecordedProvider())


logger = Logger()
tracer = build_tracer()
metrics = Metrics(namespace="DicomIndex")

# A route that records no metric is normal; Powertools would warn on every such request.
warnings.filterwarnings("ignore", message="No application metrics to publish")
