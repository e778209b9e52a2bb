"""The on-disk spool: every state the gateway has lives here, so a restart resumes any work.

Layout under ``spool_dir``::

    tmp/                                 files being written (same filesystem, so rename is atomic)
    series/<study>/<series>/<sop>.dcm    open series, still receiving
    parts/<part id>/part.json + *.dcm    a closed series part, waiting to be zipped
    outbox/<part id>.json + .zip         a zipped part waiting for S3 to confirm it
    shipped/<series>.jsonl               SOP Instance UIDs already shipped, with SHA-256 and times
    quarantine/<id>/                     an entry that could not be assembled or zipped, with reason.json
    counters.json                        duplicates dropped and versions shipped, since the spool was made

An instance is acknowledged only after its file is written to ``tmp/``, fsynced,
linked into its series folder and the folder fsynced. Every UID that names a path
passes the one UID rule (``common.uids``) first: ``.``, ``..``, separators and
control characters never reach a path. When the series folder already holds the
SOP Instance UID, the two copies are compared by SHA-256: an identical copy is
dropped (and counted); different bytes (a correction) replace the earlier copy,
so the part ships the latest version received.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.uids import strip_padding, uid_problem

TMP, SERIES, PARTS, OUTBOX, SHIPPED, QUARANTINE = "tmp", "series", "parts", "outbox", "shipped", "quarantine"
USAGE_FILE = "usage.json"
COUNTERS_FILE = "counters.json"
REASON_FILE = "reason.json"
HASH_CHUNK = 1024 * 1024
log = logging.getLogger(__name__)


class SpoolFull(OSError):
    """The configured spool limit or the disk is exhausted."""


class UnsafeUid(ValueError):
    """A UID that fails the one UID rule (``common.uids``) cannot name a spool path.

    The message names the rule broken and which UID, never the value (no PHI).
    The receiver answers a C-STORE failure status; the importer reports the file.
    """


class Stored(enum.IntEnum):
    """What :meth:`Spool.store` did; false only for an identical copy (nothing new to tell)."""

    DUPLICATE = 0  # the same SOP Instance UID with the same bytes is in the open series: dropped
    NEW = 1  # a new instance of the open series
    REPLACED = 2  # different bytes under a SOP Instance UID of the open series: the latest replaced it


# Failures that concern the whole spool, not one entry: retried, never a reason to quarantine.
SPOOL_WIDE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def entry_problem(exc: Exception) -> str | None:
    """Why ``exc`` makes one spool entry unusable (a reason without PHI), or None when it is
    transient or spool-wide (a race with a receiver, a full or read-only disk: retry)."""
    if isinstance(exc, FileNotFoundError):
        return None
    if isinstance(exc, UnsafeUid):
        return str(exc)  # names the UID and the rule broken, never the value
    if isinstance(exc, OSError):
        if exc.errno in SPOOL_WIDE:
            return None
        return f"unreadable entry ({type(exc).__name__}, {errno.errorcode.get(exc.errno or 0, 'no errno')})"
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return f"unusable entry ({type(exc).__name__})"
    return None


def checked_uid(value: str, role: str) -> str:
    """``value`` without its padding (PS3.5 6.2), after the one UID rule (PS3.5 9.1, ``common.uids``);
    raises :class:`UnsafeUid` naming ``role`` (e.g. ``"StudyInstanceUID"``) and the rule, never the value."""
    uid = strip_padding(value)
    problem = uid_problem(uid)
    if problem is not None:
        raise UnsafeUid(f"{role}: {problem}")
    return uid


def file_sha256(path: Path | str, *, dir_fd: int | None = None) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks (bounded memory)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    with open(fd, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bump_counters(root: Path, **increments: int) -> None:
    """Add to the spool's counters (``counters.json``), safe across receiver processes.

    Informational figures for ``edge-gateway status``: written under an flock,
    replaced by rename, not fsynced (a power cut may lose the last increments).
    """
    increments = {name: amount for name, amount in increments.items() if amount}
    if not increments:
        return
    path = root / COUNTERS_FILE
    with open(root / f"{COUNTERS_FILE}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        counters = read_counters(root)
        for name, amount in increments.items():
            counters[name] = counters.get(name, 0) + amount
        tmp = root / TMP / f"{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(counters, sort_keys=True))
        os.replace(tmp, path)


def read_counters(root: Path) -> dict[str, int]:
    """The spool's counters; empty when none was counted yet (or the file is unreadable)."""
    try:
        data = json.loads((root / COUNTERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}


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
    """fsync a directory so that the entries created or renamed in it survive a power loss."""
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
    """A series folder still receiving instances: ``series/<study uid>/<series uid>``."""

    study_uid: str
    series_uid: str
    path: Path

    def instances(self) -> list[Path]:
        """The instance files of the series (``*.dcm``), sorted by name."""
        return sorted(self.path.glob("*.dcm"))

    def last_change(self) -> float:
        """Newest modification of the folder (a link into it changes its mtime)."""
        return self.path.stat().st_mtime


class Spool:
    """The gateway's durable on-disk queue: tmp, series, parts, outbox, shipped and quarantine folders.

    ``max_bytes`` bounds the bytes the spool may hold; stores beyond it raise SpoolFull.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        for name in (TMP, SERIES, PARTS, OUTBOX, SHIPPED, QUARANTINE):
            makedirs_durably(root / name)
        self._lock = threading.Lock()
        self._used = self._measure()
        self._mine = 0  # bytes this process stored since it last adopted a published measurement
        self._usage_seen = 0.0

    def path(self, name: str) -> Path:
        """The spool's folder ``name`` (one of the folder constants)."""
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
        """Bytes the spool holds, as this process knows it (see ``adopt_usage``)."""
        return self._used

    def account(self, delta: int) -> None:
        """Record bytes added to (positive) or removed from (negative) the spool."""
        with self._lock:
            self._used = max(0, self._used + delta)

    def store(self, study_uid: str, series_uid: str, sop_uid: str, *chunks: bytes | memoryview) -> Stored:
        """Durably store one instance (the concatenated chunks) in its open series.

        Returns :attr:`Stored.NEW`, :attr:`Stored.REPLACED` (different bytes under a SOP
        Instance UID already in the open series: the latest wins) or :attr:`Stored.DUPLICATE`
        (identical bytes: dropped and counted). Nothing is hashed unless the SOP Instance
        UID is already in the folder, so the usual path costs no SHA-256.

        Raises UnsafeUid (a ValueError) for a UID that fails the one UID rule, SpoolFull
        when the limit or the disk is exhausted, OSError for any other failure to persist.
        """
        study_uid = checked_uid(study_uid, "StudyInstanceUID")
        series_uid = checked_uid(series_uid, "SeriesInstanceUID")
        sop_uid = checked_uid(sop_uid, "SOPInstanceUID")
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

    def _link_into_series(self, tmp: Path, study_uid: str, series_uid: str, sop_uid: str) -> Stored:
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
                name = f"{sop_uid}.dcm"
                try:
                    os.link(tmp, name, dst_dir_fd=fd)
                except FileExistsError:
                    return self._second_copy(tmp, fd, name)
                os.fsync(fd)
                return Stored.NEW
            finally:
                os.close(fd)  # also releases the flock
        raise OSError(errno.EAGAIN, "series folder kept moving")

    def _second_copy(self, tmp: Path, folder_fd: int, name: str) -> Stored:
        """The SOP Instance UID is already in the (flocked) folder: drop an identical copy, or
        replace the earlier one with different bytes (rename is atomic: one of the two is there)."""
        earlier = os.stat(name, dir_fd=folder_fd).st_size
        size = tmp.stat().st_size
        if earlier == size and file_sha256(name, dir_fd=folder_fd) == file_sha256(tmp):
            self.account(-size)
            bump_counters(self.root, duplicates_dropped=1)
            return Stored.DUPLICATE
        os.rename(tmp, name, dst_dir_fd=folder_fd)
        os.fsync(folder_fd)
        self.account(-earlier)
        bump_counters(self.root, versions_replaced=1)
        log.info(
            "new bytes under a SOP Instance UID of the open series replaced the earlier copy",
            extra={"sop": name.removesuffix(".dcm")},
        )
        return Stored.REPLACED

    def open_series(self) -> Iterator[OpenSeries]:
        """Open series folders whose names pass the UID rule; anything else is left to
        :meth:`odd_series_entries` (the assembler quarantines them)."""
        for study in sorted((self.root / SERIES).iterdir()):
            if uid_problem(study.name) is not None or not study.is_dir():
                continue
            for series in sorted(study.iterdir()):
                if uid_problem(series.name) is None and series.is_dir():
                    yield OpenSeries(study.name, series.name, series)

    def odd_series_entries(self) -> Iterator[tuple[Path, str]]:
        """Entries under ``series/`` that are no open series (left by older versions or by hand),
        with the reason: a file where a study or series folder should be, a name that is no UID."""
        for study in sorted((self.root / SERIES).iterdir()):
            if not study.is_dir():
                yield study, "a file where a study folder should be"
            elif uid_problem(study.name) is not None:
                yield study, "study folder not named by a valid UID"
            else:
                for series in sorted(study.iterdir()):
                    if not series.is_dir():
                        yield series, "a file where a series folder should be"
                    elif uid_problem(series.name) is not None:
                        yield series, "series folder not named by a valid UID"

    def quarantine(self, entries: list[Path], reason: str) -> Path:
        """Move spool entries (files or folders, one piece of work) to ``quarantine/<id>/``
        next to a ``reason.json``; return that folder. Raises FileNotFoundError when the first
        entry is gone meanwhile (nothing is then left in ``quarantine/``).

        The reason names what is wrong, never a UID value or PHI. The reason is written
        first: a crash before the move leaves a folder with nothing else, which
        :meth:`quarantined` ignores, and the entry is quarantined again. Quarantined bytes
        still count towards the spool limit until an operator removes or re-queues them.
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        folder = self.root / QUARANTINE / f"{stamp}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        source = entries[0].relative_to(self.root).parts[0]
        self.write_json(folder / REASON_FILE, {"reason": reason, "from": source, "at": time.time()})
        for moved, entry in enumerate(entries):
            try:
                os.rename(entry, folder / entry.name)
            except FileNotFoundError:
                if not moved:  # gone meanwhile (closed, uploaded, or quarantined by another process)
                    (folder / REASON_FILE).unlink()
                    folder.rmdir()
                raise
            fsync_dir(entry.parent)
        fsync_dir(folder)
        fsync_dir(folder.parent)
        log.warning("spool entry from %s/ quarantined: %s", source, reason, extra={"part": folder.name})
        return folder

    def quarantined(self) -> list[dict[str, Any]]:
        """Quarantined entries, oldest first: ``{"id", "reason", "from", "at"}``."""
        found: list[dict[str, Any]] = []
        folders = sorted((self.root / QUARANTINE).iterdir()) if (self.root / QUARANTINE).is_dir() else []
        for folder in folders:
            if not any(p.name != REASON_FILE for p in folder.iterdir()):
                continue  # being moved in, or a crash came before the move (the entry is still in place)
            try:
                info = self.read_json(folder / REASON_FILE)
            except (OSError, ValueError):
                info = {"reason": "reason file unreadable"}
            found.append({"id": folder.name, **info})
        return found

    def read_json(self, path: Path) -> dict[str, Any]:
        """The JSON object in ``path``; raises OSError, or ValueError when it is not a JSON object."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return data

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        """Write ``data`` as JSON to ``path`` durably (temporary file, fsync, rename)."""
        write_durably(path, json.dumps(data, indent=1).encode(), self.root / TMP)
