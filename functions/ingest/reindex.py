"""Replay ingest over every part under a prefix: after a schema change, or to recover a failed batch.

    python -m ingest.reindex --prefix incoming/<study>/ [--bucket B] [--table T]
    dicom-reindex --prefix incoming/            # the same, as a console script
    dicom-reindex --prefix incoming/ --drop-legacy   # migrate a table of the pre-site layout

Each object goes through the same ``ingest_object`` as the Lambda, so running it
twice (or while the Lambda is also ingesting) counts nothing twice; instance
items the part owns are refreshed with the current attributes (``--no-refresh``
to skip). Bucket and table default to ``BUCKET_NAME`` / ``TABLE_NAME``;
``AWS_ENDPOINT_URL`` points it at the local stand-in. Prints a progress bar on
stderr and a JSON summary on stdout; exit status 1 when a part failed.

Migration from the layout before sites were partitions (``pk = STUDY#<uid>``):
re-indexing every part writes the new keys (``SITE#<site>#STUDY#<uid>``, patient
keys, ``received_at``); ``--drop-legacy`` then deletes the old partition of each
study it re-indexed without a failure (a Query per study and BatchWriteItem
deletes, no Scan), so old lookups stop pointing at nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

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


class ReindexProgress:
    """A one-line progress bar (redrawn in place on a terminal, one line per part otherwise)."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def step(self, counts: Counter[str]) -> None:
        """Count one more part done and redraw the bar with the outcome ``counts``."""
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
    drop_legacy: bool = False,
) -> dict[str, object]:
    """Ingest every part under ``prefix`` again; a summary of counts, statuses and failures.

    ``drop_legacy`` deletes the pre-partition items (``STUDY#<uid>``) of every study
    whose parts all re-indexed without an exception.
    """
    if not prefix.startswith(keys.INCOMING_PREFIX):
        raise ValueError(f"the prefix must start with {keys.INCOMING_PREFIX!r}")
    todo = list(part_keys(s3, bucket, prefix))
    bar = ReindexProgress(len(todo), progress) if progress is not None else None
    counts: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    failed: list[dict[str, str]] = []
    studies: dict[str, bool] = {}
    for key in todo:
        study_uid = keys.parse_incoming_key(key)[0]
        studies.setdefault(study_uid, True)
        try:
            report = ingest_object(s3, dynamodb, table, bucket, key, concurrency=concurrency, refresh=refresh)
        except Exception as exc:  # one bad part must not stop the batch; reported below
            failed.append({"key": key, "error": f"{type(exc).__name__}: {exc}"[:300]})
            statuses["failed"] += 1
            studies[study_uid] = False
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
    if drop_legacy:
        counts["legacy_items_deleted"] = sum(
            drop_legacy_study(dynamodb, table, uid) for uid, clean in studies.items() if clean
        )
    return {
        "prefix": prefix,
        "parts": len(todo),
        "statuses": dict(statuses),
        **dict(counts),
        "failed": failed,
    }


def drop_legacy_study(dynamodb: DynamoDBClient, table: str, study_uid: str) -> int:
    """Delete every item of a study's pre-partition partition (``STUDY#<uid>``); the number deleted."""
    pk = {"S": keys.legacy_study_pk(study_uid)}
    deleted = 0
    for page in dynamodb.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": pk},
        ProjectionExpression="pk, sk",
    ):
        items = page.get("Items", [])
        for start in range(0, len(items), 25):
            requests: list[Any] = [
                {"DeleteRequest": {"Key": {"pk": i["pk"], "sk": i["sk"]}}} for i in items[start : start + 25]
            ]
            while requests:
                response = dynamodb.batch_write_item(RequestItems={table: requests})
                requests = list(response.get("UnprocessedItems", {}).get(table, []))
            deleted += len(items[start : start + 25])
    return deleted


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dicom-reindex``: index again every part under ``--prefix``.

    Returns the process exit status (non-zero when a part failed).
    """
    parser = argparse.ArgumentParser(prog="dicom-reindex", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True, help="e.g. incoming/ or incoming/<StudyUID>/")
    parser.add_argument("--bucket", default=os.environ.get("BUCKET_NAME"))
    parser.add_argument("--table", default=os.environ.get("TABLE_NAME"))
    parser.add_argument("--concurrency", type=int, default=DEFAULT_READ_CONCURRENCY)
    parser.add_argument("--no-refresh", action="store_true", help="do not rewrite existing instance items")
    parser.add_argument(
        "--drop-legacy",
        action="store_true",
        help="delete the pre-site items (pk STUDY#<uid>) of each study re-indexed without a failure",
    )
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
            drop_legacy=args.drop_legacy,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(summary, indent=1))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
