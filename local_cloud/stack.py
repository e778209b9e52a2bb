"""Start and stop the whole system on one machine: the same handler code that runs in Lambda.

moto server (S3, DynamoDB, SQS)  <- resources from template.yaml
S3 ObjectCreated -> SQS -> NotificationDispatcher -> ingest.handler.lambda_handler
http://127.0.0.1:3000 -> ApiServer (HTTP API v2 events) -> query.handler.lambda_handler
DICOM 127.0.0.1:11112 -> edge gateway -> S3 incoming/
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from common.part_format import DEFAULT_SITE

from local_cloud import snapshot
from local_cloud.api_server import ApiServer
from local_cloud.cors import CorsPolicy
from local_cloud.dispatcher import NotificationDispatcher
from local_cloud.moto_server import MotoServer, create_resources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from edge_gateway.gateway import Gateway
    from local_cloud.viewer import ViewerServer

log = logging.getLogger("local_cloud")


def forget_earlier_shipments(spool_dir: Path) -> int:
    """Drop the gateway's records of instances shipped in earlier runs; how many series had one.

    Called when the bucket starts without what earlier runs shipped (``--fresh``, or a
    snapshot older than the records because the last run was killed): a shipped record
    would make the gateway drop instances sent again as "already shipped" to a bucket
    that no longer has them.
    """
    from edge_gateway.spool import SHIPPED

    records = list((spool_dir / SHIPPED).glob("*.jsonl")) if (spool_dir / SHIPPED).is_dir() else []
    for record in records:
        record.unlink()
    return len(records)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PortInUse(RuntimeError):
    """A port the stand-in needs is taken (often: another `make run` is still going)."""


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Fail before starting anything, with the port's role, rather than half-start next to another run.

    SO_REUSEADDR as the servers themselves set it: a port whose last connections linger in
    TIME_WAIT after a Ctrl-C is free to listen on again; only a listening socket is "in use".
    """
    roles: dict[int, str] = {}
    for role, port in ports.items():
        if port and port in roles:
            raise PortInUse(f"{role} and {roles[port]} are both given port {port}")
        roles[port] = role
    for role, port in ports.items():
        if not port:
            continue  # 0: a free port is picked
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise PortInUse(
                    f"{role} port {host}:{port} is in use ({exc.strerror}): is another `make run` going?"
                ) from exc


@dataclass
class LocalCloudConfig:
    """Settings of the local stand-in: addresses, ports, resource names and its data folder."""

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
    # The site (partition) of what the local gateway stores: the one a STOW-RS or an `edge-gateway
    # import` without a site lands in, so that `make run` is one site (a correction sent by STOW
    # replaces the C-STORE'd instance instead of making a second copy in another site).
    gateway_id: str = DEFAULT_SITE
    with_gateway: bool = True
    # Base URL of the OHIF viewer the /ui page links studies to; "" = <API>/viewer.
    viewer_url: str = ""
    # Keep the bucket and index in <data_dir>/cloud between runs (local_cloud.snapshot).
    persist: bool = True
    # Start with an empty bucket and index (the saved ones are deleted).
    fresh: bool = False
    # None: the API runs open. A secret: only requests with a dev token signed by it (see dev_token).
    dev_secret: str | None = None
    # Server-Timing header on API responses: the handler's time vs its AWS calls (local_cloud.aws_timing).
    server_timing: bool = False
    # The OHIF viewer (local_cloud.viewer) on its own origin; the API allows it by CORS.
    with_viewer: bool = True
    viewer_port: int = 3001
    # Further browser origins allowed to call the API (the template's CorsAllowOrigins).
    cors_origins: tuple[str, ...] = ()
    # The gateway's C-MOVE destinations and commitment requesters, "AET=host:port" (its known_aets).
    known_aets: tuple[str, ...] = ()


class LocalCloud:
    """The cloud side on one machine: moto server, ingest dispatcher, API, viewer and gateway.

    ``start`` creates the template's resources in moto; ``stop`` saves the state when asked.
    """

    def __init__(self, config: LocalCloudConfig) -> None:
        self.config = config
        if config.moto_port == 0:
            config.moto_port = free_port(config.host)
        self.moto = MotoServer(config.host, config.moto_port)
        self.api: ApiServer | None = None
        self.dispatcher: NotificationDispatcher | None = None
        self.gateway: Gateway | None = None
        self.viewer: ViewerServer | None = None
        self._stopped = False
        # Objects the bucket does not hold although earlier runs shipped them: fresh start, or killed.
        self._bucket_behind_spool = False
        self._saving = False

    @property
    def endpoint(self) -> str:
        """The moto server's endpoint URL (for AWS_ENDPOINT_URL)."""
        return self.moto.url

    @property
    def api_url(self) -> str:
        """The API's base URL; only after ``start``."""
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
            # Links in answers (RetrieveURL) start here, whatever Host header a client sends.
            "PUBLIC_BASE_URL": f"http://{self.config.host}:{self.config.api_port}",
            # Powertools suppresses root-logger records whose name contains the service name:
            # it must not be a substring of "local_cloud" or "edge_gateway".
            "POWERTOOLS_SERVICE_NAME": "dicom-functions",
            "POWERTOOLS_TRACE_DISABLED": "true",
            # Flushed per invocation as in Lambda; `make run` sends the EMF lines to logs/metrics.log.
            "POWERTOOLS_METRICS_DISABLED": "false",
        }

    def s3(self) -> S3Client:
        """An S3 client on the moto server."""
        return boto3.client("s3", region_name=self.config.region, endpoint_url=self.endpoint)

    def dynamodb(self) -> DynamoDBClient:
        """A DynamoDB client on the moto server."""
        return boto3.client("dynamodb", region_name=self.config.region, endpoint_url=self.endpoint)

    def sqs(self) -> SQSClient:
        """An SQS client on the moto server."""
        return boto3.client("sqs", region_name=self.config.region, endpoint_url=self.endpoint)

    def start(self) -> LocalCloud:
        """Start every part; on failure stop what started and re-raise. Returns self."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalCloud:
        cfg = self.config
        ports = {"moto": cfg.moto_port, "API": cfg.api_port}
        if cfg.with_viewer:
            cfg.viewer_port = cfg.viewer_port or free_port(cfg.host)
            ports["viewer"] = cfg.viewer_port
        check_ports_free(cfg.host, {**ports, "DICOM": cfg.dicom_port} if cfg.with_gateway else ports)
        os.environ.update(self.environment())
        self.moto.start()
        restored = snapshot.Counts()

        def load_saved() -> None:
            nonlocal restored
            if cfg.persist and not cfg.fresh:
                restored = snapshot.load(self.s3(), self.dynamodb(), cfg.bucket, cfg.table, cfg.data_dir)

        self._prepare_persistence()
        queues = create_resources(
            self.endpoint, cfg.region, cfg.bucket, cfg.table, cfg.queue, before_notification=load_saved
        )
        if restored.objects or restored.items:
            log.info(
                "loaded the saved bucket and index: %d objects, %d index items (--fresh starts empty)",
                restored.objects,
                restored.items,
            )

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
        self.dispatcher = NotificationDispatcher(self.sqs(), queues["queue_url"], ingest_handler)
        self.dispatcher.start()
        if restored.to_ingest:
            snapshot.load_unindexed(self.s3(), cfg.bucket, cfg.data_dir, restored.to_ingest)
            log.info("%d saved parts were not indexed yet: ingesting them now", len(restored.to_ingest))
        self.api = ApiServer(
            cfg.host, cfg.api_port, query_handler, dev_secret=cfg.dev_secret, timer=timer, cors=self._cors()
        )
        self.api.start()
        log.info("API on %s (DICOMweb under /dicomweb)", self.api_url)
        if cfg.dev_secret:
            from local_cloud.dev_token import issue

            print(f"development token (Authorization: Bearer ...): {issue(cfg.dev_secret)}", flush=True)
        # The gateway before the viewer: a first run fetches the OHIF dist from the npm
        # registry, and images must not wait for a viewer (or a machine without network).
        if cfg.with_gateway:
            self.gateway = self._start_gateway()
        if cfg.with_viewer:
            self.viewer = self._start_viewer()
        # The /ui page reads it per request (query.routes.ui); the ports are known only now.
        os.environ["UI_VIEWER_URL"] = self.viewer_url or ""
        return self

    @property
    def viewer_url(self) -> str | None:
        """Base URL of the OHIF viewer: ``--viewer-url``, else the one served here, else None.

        A study opens at ``<base>/viewer?StudyInstanceUIDs=<uid>`` (the /ui page links there).
        """
        if self.config.viewer_url:
            return self.config.viewer_url
        return f"http://{self.config.host}:{self.viewer.port}" if self.viewer is not None else None

    def _cors(self) -> CorsPolicy:
        cfg = self.config
        origins = list(cfg.cors_origins)
        if cfg.with_viewer:
            origins += [f"http://{cfg.host}:{cfg.viewer_port}", f"http://localhost:{cfg.viewer_port}"]
        if cfg.viewer_url:  # a viewer served elsewhere calls the API from its own origin
            parts = urlsplit(cfg.viewer_url)
            origins.append(f"{parts.scheme}://{parts.netloc}")
        return CorsPolicy.from_template(origins)

    def _start_viewer(self) -> ViewerServer | None:
        from local_cloud.viewer import ViewerServer, ViewerUnavailable, ensure_dist

        try:
            dist = ensure_dist()
        except ViewerUnavailable as exc:
            log.warning("OHIF viewer not served: %s", exc)
            return None
        viewer = ViewerServer(self.config.host, self.config.viewer_port, dist, self.api_url)
        viewer.start()
        log.info("OHIF viewer on http://%s:%d", self.config.host, viewer.port)
        return viewer

    def _start_gateway(self) -> Gateway:
        from edge_gateway.config import load
        from edge_gateway.gateway import Gateway

        cfg = self.config
        if self._bucket_behind_spool:
            forgotten = forget_earlier_shipments(cfg.data_dir / "spool")
            if forgotten:
                log.info(
                    "forgot the shipped-instance records of %d series: the bucket does not hold them "
                    "(unfinished work in the spool is kept and goes to the bucket)",
                    forgotten,
                )
        config = load(self.write_gateway_config(), environ={})
        gateway = Gateway(config)
        gateway.start()
        return gateway

    def _prepare_persistence(self) -> None:
        """Decide what the bucket will hold: saved data, or nothing (``--fresh``, no persistence)."""
        cfg = self.config
        if not cfg.persist:
            self._bucket_behind_spool = True
            return
        if cfg.fresh:
            if snapshot.forget(cfg.data_dir):
                log.info("--fresh: deleted the saved bucket and index")
            self._bucket_behind_spool = True
        if not snapshot.exists(cfg.data_dir):  # first run, or the saved copy was deleted: empty bucket
            self._bucket_behind_spool = True
        killed = snapshot.mark_running(cfg.data_dir)
        self._saving = True
        if killed and not cfg.fresh:
            log.warning(
                "the last run was not stopped with Ctrl-C: what it received after its start is not in "
                "the saved bucket (send it again; the gateway will not drop it as already shipped)"
            )
            self._bucket_behind_spool = True

    def _save(self) -> None:
        cfg = self.config
        try:
            counts = snapshot.save(self.s3(), self.dynamodb(), cfg.bucket, cfg.table, cfg.data_dir)
        except Exception as exc:
            log.error("could not save the bucket and index (%s): the earlier copy is kept", exc)
            return
        snapshot.mark_stopped(cfg.data_dir)
        log.info(
            "saved %d objects (%.1f MB new) and %d index items in %s",
            counts.objects,
            counts.downloaded_bytes / 1e6,
            counts.items,
            snapshot.cloud_dir(cfg.data_dir),
        )

    def write_gateway_config(self) -> Path:
        """``<data_dir>/edge-gateway.toml``: the gateway's settings, where ``edge-gateway status``
        and ``import`` find them (``.local-run/edge-gateway.toml`` is their default)."""
        from edge_gateway.cli import LOCAL_RUN_CONFIG

        cfg = self.config
        settings: dict[str, str | float | int] = {
            "host": cfg.host,
            "port": cfg.dicom_port,
            "ae_title": cfg.ae_title,
            "stable_after": cfg.stable_after,
            "spool_dir": str((cfg.data_dir / "spool").resolve()),
            "bucket": cfg.bucket,
            "region": cfg.region,
            "endpoint_url": self.endpoint,
            "gateway_id": cfg.gateway_id,
            "table_name": cfg.table,  # C-FIND/C-MOVE/C-GET and storage commitment
        }
        lines = [
            "# Written by `make run` (local_cloud) at every start: the gateway it runs.",
            "# C-MOVE destinations: `local-cloud run --known-aet AET=host:port` (repeatable).",
            "[gateway]",
            "allowed_calling_aets = []  # any calling AE title in local mode",
            f"known_aets = {json.dumps(list(cfg.known_aets))}",
            *(f"{key} = {json.dumps(value)}" for key, value in settings.items()),
        ]
        path = cfg.data_dir / LOCAL_RUN_CONFIG.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop(self) -> None:
        """Stop gateway, viewer, API and dispatcher, save the bucket and table, stop moto; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.gateway is not None:
            self.gateway.stop()
        if self.viewer is not None:
            self.viewer.stop()
        if self.api is not None:
            self.api.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self._saving and self.dispatcher is not None:  # started far enough to have data worth keeping
            self._save()
        elif self._saving:  # failed while starting: the saved copy was not touched
            snapshot.mark_stopped(self.config.data_dir)
        self.moto.stop()
        log.info("local stand-in stopped")

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
