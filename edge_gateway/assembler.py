"""Series assembly: close an open series into a part once it has been quiet, or is big enough.

DICOM has no end-of-series message, so a series is complete when no instance
arrived for ``stable_after`` seconds. Closing is one rename of the series folder
into ``parts/`` under an exclusive lock, so instances that arrive later start a
new open series and become the next part of the same series.

One bad entry never stalls the others: an entry under ``series/`` that is no
series folder (a file where a folder should be, a name that is no UID) or that
fails to close is quarantined with its reason (``Spool.quarantine``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from edge_gateway.spool import PARTS, OpenSeries, Spool, entry_problem, fsync_dir, locked_folder

log = logging.getLogger(__name__)
PART_FILE = "part.json"


def new_part_id(now: float | None = None) -> str:
    """Sortable, unique and free of PHI: ``20261122T200245Z-<32 hex digits>``.

    128 random bits: no other writer can choose the same S3 key, so an object found
    under it (HTTP 412 on the create-only upload) was written by this part's own
    earlier attempt (``edge_gateway.uploader``).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(16)}"


@dataclass
class _Growth:
    instances: int = 0
    nbytes: int = 0


class Assembler:
    """Groups spooled instances into series and closes each series as a part.

    A series closes when no instance arrived for ``stable_after`` seconds, or when it
    reaches ``max_instances`` instances or ``max_bytes`` bytes; a closed series is
    renamed into ``parts/`` for the packager.
    """

    def __init__(
        self,
        spool: Spool,
        stable_after: float,
        max_instances: int,
        max_bytes: int,
        *,
        from_disk: bool = False,
    ) -> None:
        self._spool = spool
        # With several receiver processes only the disk knows how big an open series is.
        self._from_disk = from_disk
        self._stable_after = stable_after
        self._max_instances = max_instances
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._growth: dict[tuple[str, str], _Growth] = {}
        for series in spool.open_series():
            for path in series.instances():
                self.stored(series.study_uid, series.series_uid, path.stat().st_size)

    def stored(self, study_uid: str, series_uid: str, nbytes: int) -> None:
        """Called by the receiver after each new instance (counts for the size limits)."""
        with self._lock:
            growth = self._growth.setdefault((study_uid, series_uid), _Growth())
            growth.instances += 1
            growth.nbytes += nbytes

    def _growth_of(self, series: OpenSeries) -> _Growth:
        if self._from_disk:
            growth = _Growth()
            with os.scandir(series.path) as entries:
                for entry in entries:
                    if entry.name.endswith(".dcm"):
                        growth.instances += 1
                        growth.nbytes += entry.stat().st_size
            return growth
        with self._lock:
            return self._growth.get((series.study_uid, series.series_uid), _Growth())

    def close_ready(self, now: float | None = None) -> list[Path]:
        """Close every series that is quiet or full; return the new part folders."""
        now = time.time() if now is None else now
        for entry, reason in self._spool.odd_series_entries():
            self._quarantine(entry, reason)
        closed: list[Path] = []
        for series in self._spool.open_series():
            try:
                growth = self._growth_of(series)
                quiet = now - series.last_change() >= self._stable_after
                full = growth.instances >= self._max_instances or growth.nbytes >= self._max_bytes
                part = self.close(series, "quiet" if quiet else "size limit") if quiet or full else None
            except Exception as exc:
                problem = entry_problem(exc)
                if problem is None:
                    if isinstance(exc, FileNotFoundError):
                        continue  # closed or emptied meanwhile
                    raise
                self._quarantine(series.path, f"series could not be closed: {problem}")
                self._forget(series)
                continue
            if part is not None:
                closed.append(part)
        return closed

    def _quarantine(self, entry: Path, reason: str) -> None:
        # A series folder is flocked like for a close: no receiver is linking into it meanwhile.
        lock: AbstractContextManager[object] = locked_folder(entry) if entry.is_dir() else nullcontext()
        try:
            with lock:
                self._spool.quarantine([entry], reason)
        except FileNotFoundError:
            pass  # closed or removed meanwhile

    def close(self, series: OpenSeries, reason: str) -> Path | None:
        """Close one open series as a part: move its folder to ``parts/<part id>`` with ``part.json``.

        ``reason`` (for example "quiet" or "size limit") goes into ``part.json`` and the log.
        Returns the part folder, or None when the series held no instance (the folder is removed).
        Idempotent after a crash between writing ``part.json`` and the rename. Raises OSError
        when the spool cannot be written.
        """
        part_file = series.path / PART_FILE
        with locked_folder(series.path):
            if not series.instances():
                # An empty folder (all its instances were duplicates): just remove it.
                for leftover in series.path.iterdir():
                    leftover.unlink()
                series.path.rmdir()
                self._forget(series)
                return None
            if part_file.exists():  # a crash came between writing it and the rename
                part_id = str(self._spool.read_json(part_file)["part_id"])
            else:
                part_id = new_part_id()
                self._spool.write_json(
                    part_file,
                    {
                        "part_id": part_id,
                        "study_uid": series.study_uid,
                        "series_uid": series.series_uid,
                        "closed_at": time.time(),
                        "closed_because": reason,
                    },
                )
            target = self._spool.path(PARTS) / part_id
            os.rename(series.path, target)
        fsync_dir(target.parent)
        fsync_dir(series.path.parent)
        self._forget(series)
        try:
            series.path.parent.rmdir()  # the study folder, when it was its last series
            fsync_dir(series.path.parent.parent)
        except OSError:
            pass
        log.info(
            "series closed (%s) as part %s",
            reason,
            part_id,
            extra={"series": series.series_uid, "part": part_id},
        )
        return target

    def _forget(self, series: OpenSeries) -> None:
        with self._lock:
            self._growth.pop((series.study_uid, series.series_uid), None)
