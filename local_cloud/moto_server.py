"""The moto server as a child process on loopback, and the resources the template declares.

A child process (not a thread) keeps the emulator's CPU use away from the
gateway's and the handlers' GIL, as separate services are in AWS.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import IO, Any

import boto3

from local_cloud.moto_launcher import STATUS_PREFIX
from local_cloud.template import ingest_filter, load_template, table_definition

log = logging.getLogger("local_cloud.moto")

ACCOUNT = "123456789012"


def pipe_log(
    stream: IO[bytes], logger: logging.Logger, own: Callable[[str], bool] | None = None
) -> threading.Thread:
    """Forward a child's output to a logger, line by line, so one terminal stays readable.

    Lines for which ``own`` returns True were handled by it (the launcher's status lines).
    """

    def forward() -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if line and not (own is not None and own(line)):
                logger.info(line)

    thread = threading.Thread(target=forward, daemon=True, name=f"log-{logger.name}")
    thread.start()
    return thread


class MotoServer:
    """moto's server, started through ``local_cloud.moto_launcher`` (see ``local_cloud.moto_patches``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        # What the launcher reported: moto_patches.APPLIED, DISABLED or MISMATCH ("" until it has).
        self.patch_status = ""

    @property
    def url(self) -> str:
        """The server's endpoint URL."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it answers, up to ``timeout`` seconds; raises RuntimeError."""
        # Ctrl-C reaches the terminal's process group; moto gets its own (moto exits on SIGINT),
        # so it serves until the stand-in has stopped its users and saved the bucket, then
        # gets SIGTERM. Its stdin is a pipe from us: when we die, it ends too (moto_launcher).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_cloud.moto_launcher", "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.PIPE,
            process_group=0,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        quiet = logging.getLogger("local_cloud.moto.requests")
        quiet.setLevel(logging.WARNING)  # one line per HTTP request is noise in `make run`
        pipe_log(self.process.stdout, quiet, self._launcher_line)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):  # noqa: S310
                    log.info("moto server ready on %s", self.url)
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout:.0f} s")

    def _launcher_line(self, line: str) -> bool:
        """The launcher's own lines ("<logger> <LEVEL> <message>") go to our log at their level."""
        if not line.startswith(STATUS_PREFIX):
            return False
        _name, _, rest = line.partition(" ")
        level, _, message = rest.partition(" ")
        if level == "STATUS":
            self.patch_status = message
        else:
            known = level in ("INFO", "WARNING", "ERROR")
            log.log(logging.getLevelName(level) if known else logging.INFO, message)
        return True

    def stop(self) -> None:
        """Terminate the server (killed after 10 seconds) and close its stdin."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()


def create_resources(
    endpoint: str,
    region: str,
    bucket: str,
    table: str,
    queue: str,
    before_notification: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Bucket, table (keys and indexes from template.yaml), ingest queue and the S3 -> SQS notification.

    ``before_notification`` runs once bucket, table and queues exist but before S3 sends
    ObjectCreated events: the place to load saved data without ingesting it again.
    """
    template = load_template()
    session = boto3.Session(region_name=region)
    s3 = session.client("s3", endpoint_url=endpoint)
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)

    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ddb.create_table(**table_definition(template, table))
    failures_url = sqs.create_queue(QueueName=f"{queue}-failures")["QueueUrl"]
    failures_arn = f"arn:aws:sqs:{region}:{ACCOUNT}:{queue}-failures"
    # Like the Lambda retries + on-failure destination: three receives, then the failure queue.
    redrive = json.dumps({"deadLetterTargetArn": failures_arn, "maxReceiveCount": 3})
    queue_url = sqs.create_queue(
        QueueName=queue, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive}
    )["QueueUrl"]
    notification: Any = {
        "QueueConfigurations": [
            {
                "QueueArn": f"arn:aws:sqs:{region}:{ACCOUNT}:{queue}",
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": ingest_filter(template)}},
            }
        ]
    }
    if before_notification is not None:
        before_notification()
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=notification)
    log.info("created bucket %s, table %s and the S3 -> ingest queue", bucket, table)
    return {"queue_url": queue_url, "failures_url": failures_url}
