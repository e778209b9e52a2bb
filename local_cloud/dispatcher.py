"""Deliver S3 ObjectCreated notifications from the local queue to the ingest handler.

Stands in for Lambda's S3 trigger: a message is deleted only after the handler
returned, so a failure is redelivered (and after three receives the queue's
redrive policy moves it to the failure queue, like the on-failure destination).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from local_cloud.lambda_context import LocalLambdaContext

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger("local_cloud.ingest")


class NotificationDispatcher:
    """Delivers the bucket's event notifications from an SQS queue to the ingest handler.

    What S3 -> Lambda does in AWS; counts ``delivered`` and ``failed`` messages.
    """

    def __init__(self, sqs: SQSClient, queue_url: str, handler: Callable[[dict[str, Any], Any], Any]) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._handler = handler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-dispatcher", daemon=True)
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        """Start polling in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; waits up to 10 seconds for the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
            except Exception as exc:
                if not self._stop.is_set():
                    # One line, not a traceback: the queue is moto's, and the next poll retries.
                    log.warning("cannot read the ingest queue (%s); retrying", type(exc).__name__)
                    self._stop.wait(1)
                continue
            for message in response.get("Messages", []):
                self._deliver(message)

    def _deliver(self, message: MessageTypeDef) -> None:
        event = json.loads(message["Body"])
        if "Records" in event:  # skip the s3:TestEvent sent when the notification is configured
            try:
                self._handler(event, LocalLambdaContext(function_name="IngestFunction"))
            except Exception:
                self.failed += 1
                log.exception("ingest failed; the event will be redelivered")
                return
            self.delivered += 1
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
