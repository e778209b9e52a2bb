"""Test helpers for ingest: an in-memory S3 client answering ranged GETs (no moto, no network)."""

from __future__ import annotations

import io
import threading
from typing import Any

from common.s3_reader import S3RangeReader


class BytesS3:
    """Just enough of an S3 client for ``S3RangeReader``: ranged ``get_object`` over bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests = 0

    def get_object(self, *, Bucket: str, Key: str, Range: str, **_: Any) -> dict[str, Any]:
        start_s, end_s = Range.removeprefix("bytes=").split("-")
        start, end = int(start_s), min(int(end_s), len(self.data) - 1)
        self.requests += 1
        return {"Body": io.BytesIO(self.data[start : end + 1])}


def reader_over(data: bytes) -> S3RangeReader:
    return S3RangeReader(BytesS3(data), "bucket", "key", len(data))  # type: ignore[arg-type]


class Atomic:
    """A client whose every API call is atomic, as each DynamoDB/S3 request is in AWS.

    In-process moto is not thread-safe (its dicts change under a concurrent
    iteration); serialising single calls keeps what the concurrency test is about:
    two ingests interleaving their reads, transactions and conditional writes.
    """

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                result = attr(*args, **kwargs)
                if isinstance(result, dict) and "Body" in result:  # read the stream under the lock too
                    result["Body"] = io.BytesIO(result["Body"].read())
                return result

        return call
