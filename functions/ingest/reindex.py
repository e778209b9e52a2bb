"""Replay ingest over every part under a prefix: after a schema change, or to recover a failed batch.

    python -m ingest.reindex --prefix incoming/<study>/ [--bucket B] [--table T]
    dicom-reindex --prefix incoming/            # the same, as a console script

Each object goes through the same ``ingest_object`` as the Lambda, so running it
twice (or while the Lambda is also ingesting) counts nothing twice; instance
items the part owns are refreshed with the current attributes (``--no-refresh``
to skip). Bucket and table default to ``BUCKET_NAME`` / ``TABLE_NAME``;
``AWS_ENDPOINT_URL`` points it at the local stand-in. Prints a progress bar on
stderr and a JSON summary on stdout; exit status 1 when a part failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from common import keys

from ingest.process import DEFAULT_READ_CONCURRENCY, ingest_object

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client


def part_keys(s3: S3Client, bucket: str, prefix: str) -> Iterator[str]:
    """Every part object key under ``prefix`` (other keys are skipped)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            try:
                keys.parse_incoming_key(key)
            except keys.NotAPartKey:
                continue
            yield key


class Progress:
    """A one-line progress bar (redrawn in place on a terminal, one line per part otherwise)."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def step(self, counts: Counter[str]) -> None:
        self.done += 1
        width = 30
        filled = width * self.done // max(1, self.total)
        elapsed = time.monotonic() - self.started
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} parts "
            f"{elapsed:.0f}s  indexed {counts['indexed']}  redelivered {counts['redelivered']}  "
            f"duplicate {counts['duplicate']}  updated {counts['updated']}  "
            f"conflict {counts['conflict']}  rejected {counts['rejected']}"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        if self.tty and self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def reindex(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    bucket: str,
    table: str,
    prefix: str,
    *,
    refresh: bool = True,
    concurrency: int = DEFAULT_READ_CONCURRENCY,
    progress: IO[str] | None = None,
) -> dict[str, object]:
    if not prefix.startswith(keys.INCOMING_PREFIX):
        raise ValueError(f"the prefix must start with {keys.INCOMING_PREFIX!r}")
    todo = list(part_keys(s3, bucket, prefix))
    bar = Progress(len(todo), progress) if progress is not None else None
    counts: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    failed: list[dict[str, str]] = []
    for key in todo:
        try:
            report = ingest_object(s3, dynamodb, table, bucket, key, concurrency=concurrency, refresh=refresh)
        except Exception as exc:  # one bad part must not stop the batch; reported below
            failed.append({"key": key, "error": f"{type(exc).__name__}: {exc}"[:300]})
            statuses["failed"] += 1
        else:
            summary = report.summary()
            for name in (
                "indexed",
                "redelivered",
                "duplicate",
                "updated",
                "superseded",
                "conflict",
                "rejected",
            ):
                counts[name] += int(summary[name])
            counts["refreshed"] += report.refreshed
            statuses[report.status] += 1
        if bar is not None:
            bar.step(counts)
    return {
        "prefix": prefix,
        "parts": len(todo),
        "statuses": dict(statuses),
        **dict(counts),
        "failed": failed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dicom-reindex", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True, help="e.g. incoming/ or incoming/<StudyUID>/")
    parser.add_argument("--bucket", default=os.environ.get("BUCKET_NAME"))
    parser.add_argument("--table", default=os.environ.get("TABLE_NAME"))
    parser.add_argument("--concurrency", type=int, default=DEFAULT_READ_CONCURRENCY)
    parser.add_argument("--no-refresh", action="store_true", help="do not rewrite existing instance items")
    args = parser.parse_args(argv)
    if not args.bucket or not args.table:
        parser.error("--bucket and --table (or BUCKET_NAME and TABLE_NAME) are required")
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", config=Config(max_pool_connections=max(10, 2 * args.concurrency)))
    dynamodb = boto3.client("dynamodb")
    try:
        summary = reindex(
            s3,
            dynamodb,
            args.bucket,
            args.table,
            args.prefix,
            refresh=not args.no_refresh,
            concurrency=args.concurrency,
            progress=sys.stderr,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(summary, indent=1))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
