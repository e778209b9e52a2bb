"""A small on-disk record of instances already shipped, per series, for a retention time.

Each line is ``{"sop": SOP Instance UID, "sha256": hex of the bytes shipped, "at": epoch
seconds}``. An instance re-sent by the PACS after its series was shipped is compared
with it: the same bytes are not shipped again while the record is kept (the index
would count them once anyway; this saves the upload and keeps parts meaningful),
different bytes (a correction) are. Lines of older versions carry no ``sha256``:
such an instance is shipped again (the cloud keeps identical bytes once).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from edge_gateway.spool import checked_uid, fsync_dir

# SOP Instance UID -> SHA-256 (hex) of each version shipped (empty when not recorded).
Versions = dict[str, set[str]]


class ShippedRecord:
    """SOP Instance UIDs shipped per series, with the SHA-256 of their bytes, kept ``retention_seconds``.

    One JSON-lines file per series; used to drop instances a modality sends twice.
    """

    def __init__(self, folder: Path, retention_seconds: float) -> None:
        self._folder = folder
        self._retention = retention_seconds

    def _path(self, series_uid: str) -> Path:
        return self._folder / f"{checked_uid(series_uid, 'SeriesInstanceUID')}.jsonl"

    def versions(self, series_uid: str, now: float | None = None) -> Versions:
        """Instances of the series shipped within the retention time, with their SHA-256."""
        path = self._path(series_uid)
        if not path.exists():
            return {}
        horizon = (time.time() if now is None else now) - self._retention
        found: Versions = {}
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a torn last line after power loss
                continue
            if entry.get("at", 0) >= horizon:
                hashes = found.setdefault(str(entry["sop"]), set())
                if entry.get("sha256"):
                    hashes.add(str(entry["sha256"]))
        return found

    def shipped(self, series_uid: str, now: float | None = None) -> set[str]:
        """SOP Instance UIDs of the series shipped within the retention time."""
        return set(self.versions(series_uid, now))

    def add(self, series_uid: str, instances: Mapping[str, str | None], now: float | None = None) -> None:
        """Record shipped instances: SOP Instance UID -> SHA-256 of the bytes (None: not known)."""
        at = time.time() if now is None else now
        path = self._path(series_uid)
        created = not path.exists()
        lines = "".join(
            json.dumps({"sop": uid, "sha256": sha, "at": at} if sha else {"sop": uid, "at": at}) + "\n"
            for uid, sha in instances.items()
        )
        with open(path, "a") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            fsync_dir(self._folder)

    def prune(self, now: float | None = None) -> int:
        """Delete records whose every entry is past retention; return how many."""
        horizon = (time.time() if now is None else now) - self._retention
        removed = 0
        for path in self._folder.glob("*.jsonl"):
            if path.stat().st_mtime < horizon:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
