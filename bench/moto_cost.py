"""What ingesting one part and a Query cost on the stand-in's moto server, with an empty and a full table.

    .venv/bin/python bench/moto_cost.py [--fill 10000 --instances 25 --parts 3] [--stock]

Starts the moto server exactly as ``local-cloud run`` does (``local_cloud.moto_server.MotoServer``,
i.e. through ``local_cloud.moto_launcher``; ``--stock`` sets ``LOCAL_CLOUD_MOTO_PATCH=0``: moto
without local_cloud.moto_patches), creates the template's resources, then times
``ingest.process.ingest_object`` (the ingest handler's work: S3 reads, DICOM JSON to S3,
index writes) on ``--parts`` fresh parts, first with an empty table, then again after the
table was filled to ``--fill`` instances; after each round it times the three kinds of
DynamoDB Query the API makes (a study's partition, a ByLookup and a BySiteDate index
Query; the last one finds nothing, so it shows what walking the table costs). The fill
clones the items that real ingest wrote for the first part (new UIDs and patient, same
shapes and sizes) with BatchWriteItem: quick, so that the stock server can be measured at
10,000 instances too. Per part it prints the wall time and the time spent in each kind of
AWS call (botocore event hooks, client side: includes the HTTP round trip and moto's own
work).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

import boto3
from common import keys
from pydicom.uid import generate_uid
from query_latency import build, part_zip

from local_cloud.moto_patches import DISABLE_ENV
from local_cloud.moto_server import MotoServer, create_resources
from local_cloud.stack import free_port

BUCKET, TABLE, QUEUE, REGION = "dicom-bench", "dicom-index-bench", "dicom-ingest-bench", "us-east-1"


class CallTimer:
    """Wall time per botocore operation, summed (client side)."""

    def __init__(self, *clients: Any) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: dict[int, float] = {}
        for client in clients:
            client.meta.events.register("before-call.*.*", self._before)
            client.meta.events.register("after-call.*.*", self._after)
            client.meta.events.register("after-call-error.*.*", self._after)

    def _before(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def _after(self, context: dict[str, Any], event_name: str, **_: Any) -> None:
        started = context.get("bench_started")
        if started is not None:
            name = event_name.rsplit(".", maxsplit=1)[-1]
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def instance_count(ddb: Any) -> int:
    """Instance items in the table (a Scan: fine in a benchmark, never in the API)."""
    count, start = 0, None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": TABLE,
            "Select": "COUNT",
            "FilterExpression": "begins_with(sk, :i)",
        }
        kwargs["ExpressionAttributeValues"] = {":i": {"S": "INSTANCE#"}}
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = ddb.scan(**kwargs)
        count += page["Count"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return count


def fill(ddb: Any, templates: list[dict[str, Any]], uids: list[str], target: int, per_part: int) -> float:
    """Clone the given items (one ingested part's) with fresh UIDs until ``target`` instances; seconds."""
    started = time.perf_counter()
    text = json.dumps(templates)
    clones = max(0, target - instance_count(ddb)) // per_part
    for _ in range(clones):
        cloned = text
        for uid in uids:
            cloned = cloned.replace(uid, generate_uid())
        items = json.loads(cloned)
        for i in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[i : i + 25]]
            while requests:
                response = ddb.batch_write_item(RequestItems={TABLE: requests})
                requests = response.get("UnprocessedItems", {}).get(TABLE, [])
    return time.perf_counter() - started


def ingest_round(
    s3: Any, ddb: Any, timer: CallTimer, label: str, entries: list[dict[str, Any]], instances: int
) -> None:
    from ingest.process import ingest_object

    walls = []
    for n, entry in enumerate(entries):
        key = f"incoming/{entry['study_uid']}/{entry['series_uid']}/{label}{n}.zip"
        s3.put_object(Bucket=BUCKET, Key=key, Body=part_zip(entry["members"]))
        timer.reset()
        started = time.perf_counter()
        report = ingest_object(s3, ddb, TABLE, BUCKET, key, presigned_reads=True)
        wall = time.perf_counter() - started
        walls.append(wall)
        calls = ", ".join(
            f"{op} {timer.seconds[op]:.2f} s/{timer.calls[op]}"
            for op in sorted(timer.seconds, key=lambda o: -timer.seconds[o])
        )
        print(f"  part {n}: {wall:.2f} s, {len(report.indexed)} indexed; AWS calls (s/calls): {calls}")
    print(f"  median {statistics.median(walls):.2f} s per {instances}-instance part", flush=True)


def query_round(ddb: Any, study_uid: str) -> None:
    """The API's three kinds of Query, each 10 times after a warm-up."""
    requests: dict[str, dict[str, Any]] = {
        "study partition": {
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": keys.study_pk("bench", study_uid)}},
        },
        "ByLookup (PatientID)": {
            "IndexName": keys.LOOKUP_INDEX,
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": keys.lookup_pk("bench", "PID", "BENCH-000")}},
        },
        "BySiteDate (a month without studies)": {
            "IndexName": keys.SITE_DATE_INDEX,
            "KeyConditionExpression": "gsi2pk = :p AND gsi2sk BETWEEN :a AND :b",
            "ExpressionAttributeValues": {
                ":p": {"S": keys.site_pk("bench")},
                ":a": {"S": "20230101"},
                ":b": {"S": "20230131~"},
            },
        },
    }
    for label, request in requests.items():
        samples, found = [], 0
        for _ in range(11):
            started = time.perf_counter()
            found = len(ddb.query(TableName=TABLE, **request)["Items"])
            samples.append((time.perf_counter() - started) * 1000)
        print(f"  Query {label}: median {statistics.median(samples[1:]):.1f} ms, {found} items", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fill", type=int, default=10000, help="instances in the table for the second round")
    parser.add_argument("--instances", type=int, default=25, help="instances per part")
    parser.add_argument("--parts", type=int, default=3, help="parts timed per round")
    parser.add_argument("--stock", action="store_true", help="moto without local_cloud.moto_patches")
    args = parser.parse_args()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": REGION}
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ[DISABLE_ENV] = "0" if args.stock else "1"
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # no "part ingested" line per part

    server = MotoServer("127.0.0.1", free_port())
    server.start()
    try:
        create_resources(server.url, REGION, BUCKET, TABLE, QUEUE)
        s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION)
        ddb = boto3.client("dynamodb", endpoint_url=server.url, region_name=REGION)
        timer = CallTimer(s3, ddb)
        print(f"local_cloud.moto_patches: {server.patch_status or 'unknown'}", flush=True)
        data = build(2 * args.parts, 1, args.instances)
        first = data[0]
        print(f"table with {instance_count(ddb)} instances:")
        ingest_round(s3, ddb, timer, "empty", data[: args.parts], args.instances)
        query_round(ddb, first["study_uid"])
        pk = {"S": keys.study_pk("bench", first["study_uid"])}
        templates = ddb.query(
            TableName=TABLE, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": pk}
        )["Items"]
        # Each clone is a new patient too (the lookup items carry PatientID and name words).
        uids = [
            first["study_uid"],
            first["series_uid"],
            *first["members"],
            "BENCH-000",
            "Bench000",
            "bench000",
        ]
        seconds = fill(ddb, templates, uids, args.fill, args.instances)
        items = ddb.describe_table(TableName=TABLE)["Table"]["ItemCount"]
        print(
            f"filled to {instance_count(ddb)} instances ({items} items), BatchWriteItem, in {seconds:.0f} s"
        )
        ingest_round(s3, ddb, timer, "full", data[args.parts :], args.instances)
        query_round(ddb, first["study_uid"])
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
