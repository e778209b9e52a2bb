"""The on-disk spool: every state the gateway has lives here, so a restart resumes any work.

Layout under ``spool_dir``::

    tmp/                                 files being written (same filesystem, so rename is atomic)
    series/<study>/<series>/<sop>.dcm    open series, still receiving
    parts/<part id>/part.json + *.dcm    a closed series part, waiting to be zipped
    outbox/<part id>.json + .zip         a zipped part waiting for S3 to confirm it
    shipped/<series>.jsonl               SOP Instance UIDs already shipped, with times

An instance is acknowledged only after its file is written to ``tmp/``, fsynced,
linked into its series folder and the folder fsynced. Linking (not renaming)
never replaces an instance that is already there: the first copy wins.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UID_SAFE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
TMP, SERIES, PARTS, OUTBOX, SHIPPED = "tmp", "series", "parts", "outbox", "shipped"
USAGE_FILE = "usage.json"


class SpoolFull(OSError):
    """The configured spool limit or the disk is exhausted."""


def _same_inode(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def locked_folder(path: Path) -> Iterator[int]:
    """Hold an exclusive flock on a folder: no receiver is linking into it meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Replace ``path`` atomically with ``data``: tmp file, fsync, rename, fsync folder."""
    tmp = tmp_dir / f"{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; a leftover only when something failed
    fsync_dir(path.parent)


def _write_all(fd: int, chunks: tuple[bytes | memoryview, ...]) -> None:
    """One writev for the header and the received dataset (no joined copy); loops on short writes."""
    pending = [memoryview(chunk).cast("B") for chunk in chunks if len(chunk)]
    while pending:
        written = os.writev(fd, pending)
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]


def makedirs_durably(path: Path) -> None:
    """Create a folder and its missing parents, fsyncing each parent so the entry survives power loss."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        fsync_dir(folder.parent)


@dataclass(frozen=True)
class OpenSeries:
    study_uid: str
    series_uid: str
    path: Path

    def instances(self) -> list[Path]:
        return sorted(self.path.glob("*.dcm"))

    def last_change(self) -> float:
        """Newest modification of the folder (a link into it changes its mtime)."""
        return self.path.stat().st_mtime


class Spool:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        for name in (TMP, SERIES, PARTS, OUTBOX, SHIPPED):
            makedirs_durably(root / name)
        self._lock = threading.Lock()
        self._used = self._measure()
        self._mine = 0  # bytes this process stored since it last adopted a published measurement
        self._usage_seen = 0.0

    def path(self, name: str) -> Path:
        return self.root / name

    def recover(self) -> None:
        """At gateway start: files in tmp/ were never acknowledged (a crash came before the link)."""
        for leftover in (self.root / TMP).iterdir():
            leftover.unlink(missing_ok=True)

    def _measure(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(dirpath, name)).st_size
        return total

    def publish_usage(self) -> None:
        """Coordinator, with several receiver processes: measure the spool, share the figure on disk."""
        measured = self._measure()
        with self._lock:
            self._used = measured
        self.write_json(self.root / USAGE_FILE, {"bytes": measured, "at": time.time()})

    def adopt_usage(self) -> None:
        """Receiver process: take the coordinator's newest measurement plus what it stored since.

        Approximate by what other receivers stored since that measurement (a few seconds of traffic).
        """
        try:
            usage = self.read_json(self.root / USAGE_FILE)
            measured, at = int(usage["bytes"]), float(usage["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        with self._lock:
            if at > self._usage_seen:
                self._usage_seen = at
                self._used = measured + self._mine
                self._mine = 0

    @property
    def used_bytes(self) -> int:
        return self._used

    def account(self, delta: int) -> None:
        """Record bytes added to (positive) or removed from (negative) the spool."""
        with self._lock:
            self._used = max(0, self._used + delta)

    def store(self, study_uid: str, series_uid: str, sop_uid: str, *chunks: bytes | memoryview) -> bool:
        """Durably store one instance (the concatenated chunks); False when this SOP Instance UID
        is already in the open series.

        Raises SpoolFull when the limit or the disk is exhausted, ValueError for
        UIDs that cannot name a file, OSError for any other failure to persist.
        """
        for uid in (study_uid, series_uid, sop_uid):
            if not UID_SAFE.match(uid):
                raise ValueError("UID unusable as a file name")
        size = sum(len(chunk) for chunk in chunks)
        with self._lock:
            if self._used + size > self.max_bytes:
                raise SpoolFull(errno.ENOSPC, "spool limit reached")
            self._used += size
            self._mine += size
        tmp = self.root / TMP / f"{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, chunks)
                os.fsync(fd)
            finally:
                os.close(fd)
            return self._link_into_series(tmp, study_uid, series_uid, sop_uid)
        except OSError as exc:
            self.account(-size)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull(exc.errno, "disk full") from exc
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def _link_into_series(self, tmp: Path, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        folder = self.root / SERIES / study_uid / series_uid
        # The assembler may close (move away) the folder at any moment. A shared
        # flock on the folder, checked to still be the folder at this path, keeps
        # it in place from the link to the fsync; the assembler takes it exclusively.
        for _attempt in range(100):
            try:
                makedirs_durably(folder)
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:  # a parent was removed meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if not _same_inode(fd, folder):
                    continue
                try:
                    os.link(tmp, f"{sop_uid}.dcm", dst_dir_fd=fd)
                except FileExistsError:
                    self.account(-tmp.stat().st_size)
                    return False
                os.fsync(fd)
                return True
            finally:
                os.close(fd)  # also releases the flock
        raise OSError(errno.EAGAIN, "series folder kept moving")

    def open_series(self) -> Iterator[OpenSeries]:
        for study in sorted((self.root / SERIES).iterdir()):
            for series in sorted(study.iterdir()) if study.is_dir() else ():
                yield OpenSeries(study.name, series.name, series)

    def read_json(self, path: Path) -> dict[str, Any]:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return data

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        write_durably(path, json.dumps(data, indent=1).encode(), self.root / TMP)
