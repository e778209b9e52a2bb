"""A small on-disk record of SOP Instance UIDs already shipped, per series, for a retention time.

An instance re-sent by the PACS after its series was shipped is not shipped
again while its record is kept (the index would count it once anyway; this saves
the upload and keeps parts meaningful).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from edge_gateway.spool import fsync_dir


class ShippedRecord:
    def __init__(self, folder: Path, retention_seconds: float) -> None:
        self._folder = folder
        self._retention = retention_seconds

    def _path(self, series_uid: str) -> Path:
        return self._folder / f"{series_uid}.jsonl"

    def shipped(self, series_uid: str, now: float | None = None) -> set[str]:
        path = self._path(series_uid)
        if not path.exists():
            return set()
        horizon = (time.time() if now is None else now) - self._retention
        uids: set[str] = set()
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a torn last line after power loss
                continue
            if entry.get("at", 0) >= horizon:
                uids.add(str(entry["sop"]))
        return uids

    def add(self, series_uid: str, sop_uids: Iterable[str], now: float | None = None) -> None:
        at = time.time() if now is None else now
        path = self._path(series_uid)
        created = not path.exists()
        lines = "".join(json.dumps({"sop": uid, "at": at}) + "\n" for uid in sop_uids)
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
