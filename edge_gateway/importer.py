"""``edge-gateway import DIR``: existing DICOM files through the same spool -> series -> upload path.

Each Part 10 file is stored in the spool exactly as it is on disk (same durability
as a C-STORE), under its Study/Series/SOP Instance UIDs; the running gateway (or the
next ``edge-gateway run``) closes the series after the quiet period, zips and uploads
them. The gateway's rules apply: a file whose UIDs fail the one UID rule is reported
with the reason; a file already shipped (or waiting in the outbox, or in an open
series) with the same bytes as its latest version is dropped and counted; a file
with other bytes (an earlier version too) is stored and shipped as a new version.
Files that are not DICOM Part 10, or lack the routing UIDs, are skipped and counted.
Nothing is deleted from DIR.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TextIO

from common.dataset_digest import dataset_sha256
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial

from edge_gateway.config import GatewayConfig
from edge_gateway.dicom_peek import SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID
from edge_gateway.packager import Packager
from edge_gateway.shipped import ShippedRecord, Versions, merge_latest
from edge_gateway.spool import SHIPPED, Spool, SpoolFull, Stored, UnsafeUid, bump_counters

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    """Outcome of ``import_folder``: counts per outcome, and bytes stored.

    ``skipped`` maps a reason to a count of files; ``refused`` lists (file, reason without PHI);
    ``stopped`` says why the import ended early ("" when it went through).
    """

    stored: int = 0
    duplicates: int = 0  # identical to a copy in an open series
    already_shipped: int = 0  # identical to a copy shipped or waiting in the outbox
    versions: int = 0  # changed bytes under a SOP Instance UID already spooled or shipped
    skipped: dict[str, int] = field(default_factory=dict)
    refused: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason without PHI)
    nbytes: int = 0
    stopped: str = ""

    def skip(self, reason: str) -> None:
        """Count one file skipped for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _Shipped:
    """What the gateway shipped (or holds zipped in the outbox) per series, read once per series."""

    def __init__(self, spool: Spool, retention_seconds: float) -> None:
        self._record = ShippedRecord(spool.path(SHIPPED), retention_seconds)
        self._packager = Packager(spool, self._record, gateway_id="")
        self._seen: dict[str, Versions] = {}

    def versions(self, series_uid: str) -> Versions:
        if series_uid not in self._seen:
            pending = self._packager.outbox_versions(series_uid)
            self._seen[series_uid] = merge_latest(self._record.versions(series_uid), pending)
        return self._seen[series_uid]


def _files(folder: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(folder):
        for name in sorted(names):
            yield Path(dirpath) / name


def _uids(data: bytes) -> tuple[str, str, str] | None:
    """Routing UIDs of a Part 10 file; None when it is not one or lacks them."""
    buffer = BytesIO(data)
    try:
        ds = read_partial(buffer, stop_when=lambda tag, vr, length: tag > SERIES_INSTANCE_UID)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError):
        return None
    values = [ds.get(tag) for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)]
    uids = [str(v.value).strip("\x00 ") if v is not None and v.value else "" for v in values]
    return (uids[0], uids[1], uids[2]) if all(uids) else None


class ImportProgress:
    """A one-line progress bar on a terminal (a line every 10% otherwise)."""

    def __init__(self, total: int, out: TextIO) -> None:
        self._total = max(total, 1)
        self._out = out
        self._tty = out.isatty()
        self._started = time.monotonic()
        self._last_tenth = -1

    def update(self, done: int, nbytes: int) -> None:
        """Show ``done`` files and ``nbytes`` bytes read so far, with the rate in MB/s."""
        fraction = done / self._total
        rate = nbytes / 1e6 / max(time.monotonic() - self._started, 1e-6)
        bar = "#" * int(fraction * 30)
        line = f"[{bar:<30}] {done}/{self._total} files {rate:.1f} MB/s"
        if self._tty:
            self._out.write("\r" + line)
            self._out.flush()
        elif int(fraction * 10) != self._last_tenth:
            self._last_tenth = int(fraction * 10)
            self._out.write(line + "\n")

    def finish(self) -> None:
        """End the bar's line on a terminal."""
        if self._tty:
            self._out.write("\n")


def import_folder(config: GatewayConfig, folder: Path, out: TextIO = sys.stderr) -> ImportResult:
    """Spool every Part 10 file under ``folder`` (recursively) by the gateway's rules.

    Raises nothing for a bad file (it is counted or reported in the result); stops early,
    saying so in ``result.stopped``, when the spool limit is reached.
    """
    spool = Spool(config.spool_dir, config.max_spool_bytes)
    shipped = _Shipped(spool, config.shipped_retention_days * 86400)
    files = list(_files(folder))
    progress = ImportProgress(len(files), out)
    result = ImportResult()
    for done, path in enumerate(files, start=1):
        try:
            data = path.read_bytes()
        except OSError:
            result.skip("unreadable")
            continue
        uids = _uids(data)
        if uids is None:
            result.skip("not DICOM Part 10 with Study/Series/SOP Instance UIDs")
        else:
            try:
                _import_one(spool, shipped, uids, data, result)
            except SpoolFull:
                result.stopped = "spool limit reached: run again once the gateway has uploaded"
                break
            except UnsafeUid as exc:
                result.refused.append((path, str(exc)))
        progress.update(done, result.nbytes)
    progress.finish()
    return result


def _import_one(
    spool: Spool, shipped: _Shipped, uids: tuple[str, str, str], data: bytes, result: ImportResult
) -> None:
    """Store one file unless its latest version shipped has the same bytes; count what happened."""
    study_uid, series_uid, sop_uid = uids
    latest = shipped.versions(series_uid).get(sop_uid)
    if latest is not None:
        if latest.same_content(lambda: hashlib.sha256(data).hexdigest(), lambda: dataset_sha256(data)):
            result.already_shipped += 1
            bump_counters(spool.root, duplicates_dropped=1)
            return
        result.versions += 1  # the packager counts it as a shipped version
    outcome = spool.store(study_uid, series_uid, sop_uid, data)
    if outcome is Stored.DUPLICATE:
        result.duplicates += 1
        return
    if outcome is Stored.REPLACED:
        result.versions += 1
    result.stored += 1
    result.nbytes += len(data)
