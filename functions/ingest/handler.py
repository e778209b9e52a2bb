"""Lambda entry point for ObjectCreated events on ``incoming/*.zip``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from common import keys
from common.observability import logger, metrics, tracer
from common.settings import Settings

from ingest.process import PRESIGNED_READS, ingest_object

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

settings = Settings.from_env()
# One connection per parallel ranged GET (ingest.process.DEFAULT_READ_CONCURRENCY), plus writes.
s3: S3Client = boto3.client(
    "s3", config=Config(max_pool_connections=40, retries={"mode": "standard", "max_attempts": 5})
)
dynamodb: DynamoDBClient = boto3.client("dynamodb")


def handle(event: S3Event) -> dict[str, Any]:
    """Index every ``incoming/*.zip`` object of an S3 event notification; returns a summary per part.

    Other keys are logged and ignored. S3 and DynamoDB errors propagate, so that the event
    is retried.
    """
    results = []
    # An s3:TestEvent (sent when a notification is configured) has no Records.
    for record in event.records if "Records" in event.raw_event else []:
        key = unquote_plus(record.s3.get_object.key)
        if not key.startswith(keys.INCOMING_PREFIX) or not key.endswith(".zip"):
            logger.warning("ignored object outside incoming/*.zip", extra={"key": key})
            continue
        try:
            keys.parse_incoming_key(key)
        except keys.NotAPartKey:
            # Not incoming/<study>/<series>/<part>.zip: nothing to index, and retrying will not help.
            logger.warning("ignored object that is not a part key", extra={"key": key})
            metrics.add_metric(name="ObjectsIgnored", unit="Count", value=1)
            continue
        # The version the event names: what was uploaded, even if the key were written again since.
        version = record.s3.get_object.version_id
        report = ingest_object(
            s3,
            dynamodb,
            settings.table_name,
            record.s3.bucket.name,
            key,
            presigned_reads=PRESIGNED_READS,
            version_id=version if version and version != "null" else None,
        )
        summary = report.summary()
        for name in ("indexed", "redelivered", "duplicate", "updated", "superseded", "conflict", "rejected"):
            metrics.add_metric(name=f"Instances{name.title()}", unit="Count", value=summary[name])
        # Instances kept out of a study because they name another patient (see ingest.process).
        metrics.add_metric(name="PatientConflicts", unit="Count", value=summary["patient_conflict"])
        metrics.add_metric(name="BytesFetched", unit="Bytes", value=report.bytes_fetched)
        metrics.add_metric(name="S3Requests", unit="Count", value=report.requests)
        metrics.add_metric(name="PartsRejected", unit="Count", value=int(report.status == "rejected"))
        tracer.put_annotation(key="ingest_status", value=report.status)
        tracer.put_metadata(key=key, value=summary)
        results.append({"key": key, **summary})
    return {"parts": results}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point of the ingest function (S3 event notifications)."""
    return handle(event)
