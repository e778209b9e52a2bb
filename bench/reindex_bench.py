"""What migrating / re-indexing costs: seconds and DynamoDB requests per 1,000 instances.

    .venv/bin/python bench/reindex_bench.py [--instances 1000 --per-part 100]

On the stand-in's moto server (``local_cloud.moto_server.MotoServer``, as ``local-cloud
run`` starts it), with the template's resources:

1. reference: every part ingested once, as the ingest Lambda does (``ingest_object``);
2. migration: the items are moved to the pre-partition layout (``STUDY#<uid>``: the
   table as the previous code left it, with BatchWriteItem), then
   ``reindex(..., drop_legacy=True)`` re-indexes every part and deletes the old items;
3. replay: the re-index command once more on the migrated table (nothing changes).

Prints seconds and DynamoDB requests (client side, by operation) per 1,000 instances
for each run and its ratio to the reference run. Seconds on moto are not AWS seconds;
the request counts are what DynamoDB would bill.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from typing import Any

import boto3
from common import keys
from ingest.process import ingest_object
from ingest.reindex import reindex
from query_latency import build, part_zip

from local_cloud.moto_server import MotoServer, create_resources
from local_cloud.stack import free_port

BUCKET, TABLE, QUEUE, REGION = "dicom-bench", "dicom-index-bench", "dicom-ingest-bench", "us-east-1"


class Requests:
    """Counts DynamoDB requests by operation (botocore hook, one per HTTP request sent)."""

    def __init__(self, client: Any) -> None:
        self.by_operation: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.by_operation[model.name] += 1

    def take(self) -> Counter[str]:
        taken, self.by_operation = self.by_operation, Counter()
        return taken


def legacy_move(ddb: Any) -> int:
    """Move every study partition to the previous layout's key (``STUDY#<uid>``): the table as it was."""
    items = []
    for page in ddb.get_paginator("scan").paginate(TableName=TABLE):
        for item in page["Items"]:
            try:
                keys.study_of(item["pk"]["S"])
            except ValueError:
                continue
            items.append(item)
    for start in range(0, len(items), 25):
        batch = items[start : start + 25]
        puts = [
            {"PutRequest": {"Item": {**i, "pk": {"S": keys.legacy_study_pk(keys.study_of(i["pk"]["S"])[1])}}}}
            for i in batch
        ]
        deletes = [{"DeleteRequest": {"Key": {"pk": i["pk"], "sk": i["sk"]}}} for i in batch]
        for writes in (puts, deletes):
            pending = writes
            while pending:
                response = ddb.batch_write_item(RequestItems={TABLE: pending})
                pending = response.get("UnprocessedItems", {}).get(TABLE, [])
    return len(items)


def report(
    label: str, seconds: float, requests: Counter[str], instances: int, reference: tuple[float, int]
) -> None:
    per = 1000 / instances
    total = sum(requests.values())
    ops = ", ".join(f"{op} {n * per:.0f}" for op, n in requests.most_common())
    ratio = f"x{seconds / reference[0]:.2f} time, x{total / max(1, reference[1]):.2f} requests vs reference"
    print(f"{label:<10} {seconds * per:7.1f} s  {total * per:7.0f} requests per 1,000 instances  ({ratio})")
    print(f"{'':<10} by operation per 1,000 instances: {ops}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1000, help="instances in the bucket")
    parser.add_argument("--per-part", type=int, default=100, help="instances per part (one series each)")
    args = parser.parse_args()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": REGION}
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    server = MotoServer("127.0.0.1", free_port())
    server.start()
    try:
        create_resources(server.url, REGION, BUCKET, TABLE, QUEUE)
        s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION)
        ddb = boto3.client("dynamodb", endpoint_url=server.url, region_name=REGION)
        parts = build(max(1, args.instances // args.per_part), 1, args.per_part)
        instances = sum(len(p["members"]) for p in parts)
        part_keys = []
        for n, part in enumerate(parts):
            key = keys.incoming_key(part["study_uid"], part["series_uid"], f"bench-{n:04d}")
            s3.put_object(Bucket=BUCKET, Key=key, Body=part_zip(part["members"]))
            part_keys.append(key)
        counter = Requests(ddb)
        print(f"{instances} instances in {len(parts)} parts")

        started = time.perf_counter()
        for key in part_keys:
            ingest_object(s3, ddb, TABLE, BUCKET, key)
        seconds, requests = time.perf_counter() - started, counter.take()
        reference = (seconds, sum(requests.values()))
        report("reference", seconds, requests, instances, reference)

        copied = legacy_move(ddb)
        counter.take()
        started = time.perf_counter()
        summary = reindex(s3, ddb, BUCKET, TABLE, "incoming/", drop_legacy=True)
        seconds, requests = time.perf_counter() - started, counter.take()
        assert summary["failed"] == [] and summary["legacy_items_deleted"] == copied, summary
        report("migration", seconds, requests, instances, reference)
        print(
            f"{'':<10} indexed {summary['indexed']}, redelivered {summary['redelivered']}, "
            f"old items deleted {copied}"
        )

        started = time.perf_counter()
        summary = reindex(s3, ddb, BUCKET, TABLE, "incoming/")
        seconds, requests = time.perf_counter() - started, counter.take()
        assert summary["redelivered"] == instances, summary
        report("replay", seconds, requests, instances, reference)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
