"""A small on-disk record of instances already shipped, per series, for a retention time.

Each line is ``{"sop": SOP Instance UID, "sha256": hex of the bytes shipped,
"dataset_sha256": hex of their data set (``common.dataset_digest``), "at": epoch seconds,
"packaged_at": epoch seconds the part was zipped}``; versions are compared by
``dataset_sha256`` (by ``sha256`` for lines written before it existed). An instance re-sent by the
PACS after its series was shipped is compared with the LATEST version shipped (the one
zipped last): the same bytes are not shipped again while the record is kept (the index
would count them once anyway; this saves the upload and keeps parts meaningful), any
other bytes are, an earlier version too (a correction undone: the cloud's "latest
received wins" must see it). Lines of older gateways carry no ``sha256`` (such an
instance is shipped again: the cloud keeps identical bytes once) and no ``packaged_at``
(their ``at`` orders them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_gateway.spool import checked_uid, fsync_dir


@dataclass(frozen=True)
class Latest:
    """The latest version of an instance the gateway shipped or holds zipped: the SHA-256 (hex,
    "" when not recorded) of its bytes and of its data set, and when its part was zipped
    (epoch seconds: orders versions)."""

    sha256: str
    packaged_at: float
    dataset_sha256: str = ""

    def same_content(self, file_sha256: Callable[[], str], dataset_sha256: Callable[[], str]) -> bool:
        """Whether a copy is this version: its data set's SHA-256 when recorded, else the file's
        (both computed only when needed); False when nothing was recorded."""
        if self.dataset_sha256:
            return dataset_sha256() == self.dataset_sha256
        return bool(self.sha256) and file_sha256() == self.sha256


# SOP Instance UID -> the latest version shipped (or waiting in the outbox).
Versions = dict[str, Latest]


def merge_latest(into: Versions, other: Versions) -> Versions:
    """Keep, per SOP Instance UID, the version zipped last (``other`` wins a tie); returns ``into``."""
    for sop, version in other.items():
        known = into.get(sop)
        if known is None or version.packaged_at >= known.packaged_at:
            into[sop] = version
    return into


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
        """Instances of the series shipped within the retention time, each with its latest version."""
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
                packaged_at = float(entry.get("packaged_at") or entry.get("at") or 0)
                version = Latest(
                    str(entry.get("sha256") or ""), packaged_at, str(entry.get("dataset_sha256") or "")
                )
                merge_latest(found, {str(entry["sop"]): version})  # a later line wins a tie
        return found

    def shipped(self, series_uid: str, now: float | None = None) -> set[str]:
        """SOP Instance UIDs of the series shipped within the retention time."""
        return set(self.versions(series_uid, now))

    def add(
        self,
        series_uid: str,
        instances: Mapping[str, str | None],
        now: float | None = None,
        packaged_at: float | None = None,
        datasets: Mapping[str, str] | None = None,
    ) -> None:
        """Record shipped instances: SOP Instance UID -> SHA-256 of the bytes (None: not known),
        ``datasets`` -> SHA-256 of their data sets, zipped at ``packaged_at`` (epoch seconds;
        default: now)."""
        of_dataset = datasets or {}
        at = time.time() if now is None else now
        path = self._path(series_uid)
        created = not path.exists()
        zipped = at if packaged_at is None else packaged_at
        lines = "".join(
            json.dumps(
                {
                    "sop": uid,
                    **({"sha256": sha} if sha else {}),
                    **({"dataset_sha256": of_dataset[uid]} if of_dataset.get(uid) else {}),
                    "at": at,
                    "packaged_at": zipped,
                }
            )
            + "\n"
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
