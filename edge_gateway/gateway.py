"""The running gateway: the DICOM listener, plus the coordinator threads that assemble, zip and upload.

At start every piece of state is read back from the spool, so a restart after a
crash finishes what was interrupted: open series keep waiting for their quiet
period, closed parts get zipped, the outbox gets uploaded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from edge_gateway import receiver
from edge_gateway.assembler import Assembler
from edge_gateway.association_slots import AssociationSlots
from edge_gateway.config import GatewayConfig
from edge_gateway.dispatch import ConnectionDispatcher
from edge_gateway.packager import Packager
from edge_gateway.receiver_pool import USAGE_EVERY, ReceiverPool, pool_for
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import SHIPPED, Spool
from edge_gateway.uploader import Uploader

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from pynetdicom.transport import AssociationServer

log = logging.getLogger(__name__)
TICK = 0.5
STATUS_EVERY = 2.0
STATUS_FILE = "status.json"


def s3_client(config: GatewayConfig) -> S3Client:
    """An S3 client from the standard AWS credential chain, at ``endpoint_url`` when set, with retries."""
    client: S3Client = boto3.client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url or None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )
    return client


class Gateway:
    """The coordinator: the DICOM listener, series assembly, packaging, upload and status of one spool."""

    def __init__(self, config: GatewayConfig, s3: S3Client | None = None) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, config.max_spool_bytes)
        self.spool.recover()
        shipped = ShippedRecord(self.spool.path(SHIPPED), config.shipped_retention_days * 86400)
        self.assembler = Assembler(
            self.spool,
            config.stable_after,
            config.max_part_instances,
            config.max_part_bytes,
            from_disk=config.receiver_processes > 1,
        )
        self.packager = Packager(self.spool, shipped, config.gateway_id, deflate=config.deflate)
        self.uploader = Uploader(
            s3 or s3_client(config),
            config.bucket,
            self.spool,
            shipped,
            kms_key_id=config.kms_key_id,
            multipart_threshold=config.multipart_threshold,
            backoff_base=config.upload_backoff_base,
            backoff_cap=config.upload_backoff_cap,
        )
        self._shipped = shipped
        self._stop = threading.Event()
        self._status_written = 0.0
        self._threads: list[threading.Thread] = []
        self._server: AssociationServer | None = None
        self._pool: ReceiverPool | None = None
        self._slots: AssociationSlots | None = None
        self._usage_published = 0.0
        self.started_at = time.time()

    @property
    def port(self) -> int:
        """The TCP port the DICOM listener is bound to (the configured one, or the one the OS chose for 0)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start the listener (and the receiver processes) and the coordinator's background loops."""
        self._slots = receiver.slot_table(self.config)
        dispatcher = ConnectionDispatcher(self._slots) if self.config.receiver_processes > 1 else None
        _, self._server = receiver.start(
            self.config, self.spool, self.assembler.stored, dispatcher=dispatcher, slots=self._slots
        )
        if dispatcher is not None:
            self.spool.publish_usage()
            self._pool = pool_for(self.config, self.port, dispatcher)
            self._pool.start()
        loops = [("assemble", self._assemble_loop), ("upload", self._upload_loop)]
        if self.config.table_name:  # storage commitment reports (edge_gateway.storage_commitment)
            from edge_gateway.storage_commitment import CommitmentWorker

            worker = CommitmentWorker(self.config)
            loops.append(("commitment", lambda: worker.step(self._stop)))
        for name, loop in loops:
            thread = threading.Thread(target=self._guarded(loop), name=f"edge-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop accepting, let the coordinator finish its current step, keep the rest on disk."""
        if self._pool is not None:
            self._pool.stop()
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._write_status()
        log.info("gateway stopped; unfinished work stays in %s", self.config.spool_dir)

    def _guarded(self, loop: Any) -> Any:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    loop()
                except Exception:  # keep the coordinator alive; the spool keeps the work
                    log.exception("coordinator step failed; retrying")
                    self._stop.wait(5)

        return run

    def _assemble_loop(self) -> None:
        if self._pool is not None:
            self._pool.check()
            if time.monotonic() - self._usage_published >= USAGE_EVERY:
                self._usage_published = time.monotonic()
                self.spool.publish_usage()
        self.assembler.close_ready()
        for part_dir in self.packager.pending():
            self.packager.package(part_dir)
        if time.monotonic() - self._status_written >= STATUS_EVERY:
            self._write_status()
        self._stop.wait(TICK)

    def _upload_loop(self) -> None:
        now = time.time()
        for entry in self.packager.outbox():
            if self._stop.is_set():
                return
            if self.uploader.due(entry, now):
                self.uploader.upload(entry)
        self._shipped.prune()
        self._stop.wait(TICK)

    def status(self) -> dict[str, Any]:
        """What ``edge-gateway status`` shows: spool, open series, outbox, uploads, last error (no PHI)."""
        stats = self.uploader.stats
        return {
            **spool_status(self.spool),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uploaded_parts": stats.uploaded_parts,
            "last_upload": stats.last_upload,
            "last_error": stats.last_error,
            "last_error_at": stats.last_error_at,
            "retrying_parts": len(stats.retrying),
            "receiver_pids": [os.getpid(), *(self._pool.pids if self._pool else [])],
            "associations": self._slots.counts() if self._slots else {},
            **(dimse_status(self.config.spool_dir) if self.config.table_name else {}),
        }

    def _write_status(self) -> None:
        self._status_written = time.monotonic()
        self.spool.write_json(self.spool.root / STATUS_FILE, {**self.status(), "written_at": time.time()})


def dimse_status(spool_dir: Path) -> dict[str, Any]:
    """Query/retrieve and storage commitment activity (edge_gateway.dimse_services)."""
    from edge_gateway.dimse_services import activity_status

    return activity_status(spool_dir)


def spool_status(spool: Spool) -> dict[str, Any]:
    """What is on disk right now; readable without a running gateway."""
    open_series = list(spool.open_series())
    return {
        "open_series": len(open_series),
        "open_instances": sum(len(s.instances()) for s in open_series),
        "parts_to_zip": sum(1 for p in spool.path("parts").iterdir() if p.is_dir()),
        "outbox_parts": len(list(spool.path("outbox").glob("*.zip"))),
        "spool_bytes": spool.used_bytes,
    }
