"""Start and stop the whole system on one machine: the same handler code that runs in Lambda.

moto server (S3, DynamoDB, SQS)  <- resources from template.yaml
S3 ObjectCreated -> SQS -> Dispatcher -> ingest.handler.lambda_handler
http://127.0.0.1:3000 -> ApiServer (HTTP API v2 events) -> query.handler.lambda_handler
DICOM 127.0.0.1:11112 -> edge gateway -> S3 incoming/
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from local_cloud.api_server import ApiServer
from local_cloud.dispatcher import Dispatcher
from local_cloud.moto_server import MotoServer, create_resources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from edge_gateway.gateway import Gateway

log = logging.getLogger("local_cloud")


def forget_earlier_shipments(spool_dir: Path) -> int:
    """Drop the gateway's records of instances shipped in earlier runs; how many series had one.

    The stand-in's moto keeps S3 and DynamoDB in memory, so every run starts with an empty
    bucket, while the spool on disk survives. Its shipped record would make the gateway drop
    instances sent again as "already shipped" to a bucket that no longer has them.
    """
    from edge_gateway.spool import SHIPPED

    records = list((spool_dir / SHIPPED).glob("*.jsonl")) if (spool_dir / SHIPPED).is_dir() else []
    for record in records:
        record.unlink()
    return len(records)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PortInUse(RuntimeError):
    """A port the stand-in needs is taken (often: another `make run` is still going)."""


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Fail before starting anything, with the port's role, rather than half-start next to another run."""
    for role, port in ports.items():
        if not port:
            continue  # 0: a free port is picked
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise PortInUse(
                    f"{role} port {host}:{port} is in use ({exc.strerror}): is another `make run` going?"
                ) from exc


@dataclass
class LocalCloudConfig:
    host: str = "127.0.0.1"
    moto_port: int = 5000
    api_port: int = 3000
    dicom_port: int = 11112
    ae_title: str = "EDGE"
    stable_after: float = 3.0
    data_dir: Path = field(default_factory=lambda: Path(".local-run"))
    bucket: str = "dicom-local"
    table: str = "dicom-index"
    queue: str = "dicom-ingest"
    region: str = "us-east-1"
    gateway_id: str = "local-edge"
    with_gateway: bool = True
    # None: the API runs open. A secret: only requests with a dev token signed by it (see dev_token).
    dev_secret: str | None = None
    # Server-Timing header on API responses: the handler's time vs its AWS calls (local_cloud.aws_timing).
    server_timing: bool = False


class LocalCloud:
    def __init__(self, config: LocalCloudConfig) -> None:
        self.config = config
        if config.moto_port == 0:
            config.moto_port = free_port(config.host)
        self.moto = MotoServer(config.host, config.moto_port)
        self.api: ApiServer | None = None
        self.dispatcher: Dispatcher | None = None
        self.gateway: Gateway | None = None
        self._stopped = False

    @property
    def endpoint(self) -> str:
        return self.moto.url

    @property
    def api_url(self) -> str:
        assert self.api is not None
        return f"http://{self.config.host}:{self.api.port}"

    def environment(self) -> dict[str, str]:
        """What the functions see: the template's variables, pointed at the stand-in."""
        return {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": self.config.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "TABLE_NAME": self.config.table,
            "BUCKET_NAME": self.config.bucket,
            # Powertools suppresses root-logger records whose name contains the service name:
            # it must not be a substring of "local_cloud" or "edge_gateway".
            "POWERTOOLS_SERVICE_NAME": "dicom-functions",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }

    def s3(self) -> S3Client:
        return boto3.client("s3", region_name=self.config.region, endpoint_url=self.endpoint)

    def dynamodb(self) -> DynamoDBClient:
        return boto3.client("dynamodb", region_name=self.config.region, endpoint_url=self.endpoint)

    def sqs(self) -> SQSClient:
        return boto3.client("sqs", region_name=self.config.region, endpoint_url=self.endpoint)

    def start(self) -> LocalCloud:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalCloud:
        cfg = self.config
        ports = {"moto": cfg.moto_port, "API": cfg.api_port}
        check_ports_free(cfg.host, {**ports, "DICOM": cfg.dicom_port} if cfg.with_gateway else ports)
        os.environ.update(self.environment())
        self.moto.start()
        queues = create_resources(self.endpoint, cfg.region, cfg.bucket, cfg.table, cfg.queue)

        timer = None
        if cfg.server_timing:
            from local_cloud.aws_timing import AwsCallTimer

            timer = AwsCallTimer()
            timer.install_on_default_session()  # before the functions create their clients
        # Imported only now: like a Lambda cold start, they read the environment at import.
        from common.observability import logger as function_logger
        from ingest.handler import lambda_handler as ingest_handler
        from query.handler import lambda_handler as query_handler

        from local_cloud.logs import adopt_powertools

        adopt_powertools(function_logger)
        self.dispatcher = Dispatcher(self.sqs(), queues["queue_url"], ingest_handler)
        self.dispatcher.start()
        self.api = ApiServer(cfg.host, cfg.api_port, query_handler, dev_secret=cfg.dev_secret, timer=timer)
        self.api.start()
        log.info("API on %s (DICOMweb under /dicomweb)", self.api_url)
        if cfg.dev_secret:
            from local_cloud.dev_token import issue

            print(f"development token (Authorization: Bearer ...): {issue(cfg.dev_secret)}", flush=True)
        if cfg.with_gateway:
            self.gateway = self._start_gateway()
        return self

    def _start_gateway(self) -> Gateway:
        from edge_gateway.config import load
        from edge_gateway.gateway import Gateway

        cfg = self.config
        forgotten = forget_earlier_shipments(cfg.data_dir / "spool")
        if forgotten:
            log.info(
                "moto starts empty: forgot the shipped-instance records of %d series from earlier runs "
                "(unfinished work in the spool is kept and goes to the new bucket)",
                forgotten,
            )
        config = load(
            overrides={
                "host": cfg.host,
                "port": cfg.dicom_port,
                "ae_title": cfg.ae_title,
                "allowed_calling_aets": (),  # any calling AE title in local mode
                "stable_after": cfg.stable_after,
                "spool_dir": cfg.data_dir / "spool",
                "bucket": cfg.bucket,
                "region": cfg.region,
                "endpoint_url": self.endpoint,
                "gateway_id": cfg.gateway_id,
                "table_name": cfg.table,  # C-FIND/C-MOVE/C-GET and storage commitment
            },
            environ={},
        )
        gateway = Gateway(config)
        gateway.start()
        return gateway

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.gateway is not None:
            self.gateway.stop()
        if self.api is not None:
            self.api.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.moto.stop()
        log.info("local stand-in stopped")

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
