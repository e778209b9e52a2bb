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
SOP Instance UID, the two data sets (after the File Meta Information) are compared by
SHA-256: an identical copy is dropped (and counted); different bytes (a correction) replace the earlier copy,
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
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.dataset_digest import DatasetDigest
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


class NotQuarantined(KeyError):
    """No quarantine entry has this id."""


class CannotRequeue(ValueError):
    """A quarantined entry that would still not be served: the message says why (no UID value, no PHI)."""


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


def file_dataset_sha256(path: Path | str, *, dir_fd: int | None = None) -> str:
    """SHA-256 (hex) of a file's data set, after its File Meta Information (``common.dataset_digest``)."""
    digest = DatasetDigest()
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


def _study_uid_of(series_folder: Path) -> str:
    """The StudyInstanceUID the instances of a series folder name ('' when none can be read)."""
    from pydicom import dcmread

    for member in sorted(series_folder.glob("*.dcm")):
        try:
            ds = dcmread(member, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except Exception:  # noqa: S112 - an unreadable file: try the next one
            continue
        return strip_padding(str(ds.get("StudyInstanceUID", "") or ""))
    return ""


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
        """At gateway start: files in tmp/ were never acknowledged (a crash came before the link);
        folders in tmp/ are removals a crash interrupted (:meth:`discard_folder`)."""
        for leftover in (self.root / TMP).iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def discard_folder(self, folder: Path) -> None:
        """Remove a spool folder so that a crash cannot leave it half-deleted where it was.

        ``shutil.rmtree`` interrupted by a crash leaves the folder without some of its files
        (a part folder without ``part.json``, which the packager then retried forever). The
        folder is first renamed into ``tmp/`` (one atomic rename), then deleted; :meth:`recover`
        finishes what a crash interrupted. Raises OSError (FileNotFoundError when it is gone).
        """
        doomed = self.root / TMP / f"{uuid.uuid4().hex}.discarded"
        os.rename(folder, doomed)
        fsync_dir(folder.parent)
        shutil.rmtree(doomed, ignore_errors=True)

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
        # The data sets: a file imported from disk and the same instance received carry other meta.
        if file_dataset_sha256(name, dir_fd=folder_fd) == file_dataset_sha256(tmp):
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
        # Where each entry was (spool-relative), so that ``requeue`` can put it back.
        paths = [str(entry.relative_to(self.root)) for entry in entries]
        self.write_json(
            folder / REASON_FILE, {"reason": reason, "from": source, "at": time.time(), "paths": paths}
        )
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
            info.pop("paths", None)  # spool paths (UIDs): for requeue, not for the status listing
            found.append({"id": folder.name, **info})
        return found

    def quarantine_folder(self, entry_id: str) -> Path:
        """The folder of quarantine entry ``entry_id`` (as listed by :meth:`quarantined`).

        Raises NotQuarantined for an id that names no entry (or is not a plain folder name).
        """
        folder = self.root / QUARANTINE / entry_id
        if not entry_id or "/" in entry_id or entry_id in (".", "..") or not folder.is_dir():
            raise NotQuarantined(entry_id)
        return folder

    def remove_quarantined(self, entry_id: str) -> int:
        """Delete quarantine entry ``entry_id`` and its bytes; returns the bytes freed.

        Raises NotQuarantined. Logs the id, where it came from and the size, never a UID.
        """
        folder = self.quarantine_folder(entry_id)
        try:
            source = str(self.read_json(folder / REASON_FILE).get("from", "?"))
        except (OSError, ValueError):
            source = "?"
        freed = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        self.discard_folder(folder)
        self.account(-freed)
        log.warning(
            "quarantine entry %s (from %s/, %d bytes) removed by an operator", entry_id, source, freed
        )
        return freed

    def requeue(self, entry_id: str) -> str:
        """Put quarantine entry ``entry_id`` back where it came from, for the gateway to ship it;
        returns that spool folder (``series``, ``parts`` or ``outbox``).

        The entry is checked first as the gateway would check it (the one UID rule for every
        name and UID that builds a path, readable ``part.json`` / outbox descriptor). Raises
        NotQuarantined, or CannotRequeue saying what still cannot be served (nothing is moved).
        """
        folder = self.quarantine_folder(entry_id)
        try:
            info = self.read_json(folder / REASON_FILE)
        except (OSError, ValueError) as exc:
            raise CannotRequeue("its reason.json is unreadable: where it came from is unknown") from exc
        held = sorted(p for p in folder.iterdir() if p.name != REASON_FILE)
        if not held:
            raise CannotRequeue("it holds nothing (the entry was never moved in)")
        source = str(info.get("from", ""))
        recorded = {Path(p).name: Path(p) for p in info.get("paths") or [] if isinstance(p, str)}
        if source == SERIES:
            moves = [(item, self._series_destination(item, recorded.get(item.name))) for item in held]
        elif source == PARTS:
            moves = [(item, self._part_destination(item)) for item in held]
        elif source == OUTBOX:
            moves = self._outbox_destinations(held)
        else:
            raise CannotRequeue("it does not say which spool folder it came from")
        taken = [dest for _item, dest in moves if dest.exists()]
        if taken:
            raise CannotRequeue(
                f"{source}/ already holds an entry of that name (a newer copy is on its way): "
                "requeue it after that one has been shipped"
            )
        for item, dest in moves:
            makedirs_durably(dest.parent)
            os.rename(item, dest)
            fsync_dir(dest.parent)
        (folder / REASON_FILE).unlink()
        folder.rmdir()
        fsync_dir(folder.parent)
        log.warning("quarantine entry %s re-queued to %s/ by an operator", entry_id, source)
        return source

    def _series_destination(self, item: Path, recorded: Path | None) -> Path:
        """``series/<study>/<series>`` for a quarantined series folder (``series/<study>`` for a
        study folder), after the UID rule."""
        study_level = (recorded is not None and len(recorded.parts) == 2) or (
            recorded is None and item.is_dir() and any(child.is_dir() for child in item.iterdir())
        )
        if study_level:
            if not item.is_dir():
                raise CannotRequeue("it is a file where a study folder should be, not a study: remove it")
            self._requeue_uid(item.name, "study folder name (StudyInstanceUID)")
            for series in item.iterdir():
                self._series_destination(series, Path(SERIES, item.name, series.name))
            return self.root / SERIES / item.name
        if not item.is_dir():
            raise CannotRequeue("it is a file where a series folder should be, not a series: remove it")
        series_uid = self._requeue_uid(item.name, "series folder name (SeriesInstanceUID)")
        if recorded is not None and len(recorded.parts) == 3:
            study_uid = recorded.parts[1]
        else:  # quarantined by an older version, which did not record where: ask the instances
            study_uid = _study_uid_of(item)
        study_uid = self._requeue_uid(study_uid, "StudyInstanceUID of the series")
        for member in item.iterdir():
            if not member.is_file() or member.suffix != ".dcm":
                raise CannotRequeue("the series folder holds something that is not an instance file (*.dcm)")
            self._requeue_uid(member.stem, "instance file name (SOPInstanceUID)")
        return self.root / SERIES / study_uid / series_uid

    def _part_destination(self, item: Path) -> Path:
        """``parts/<part id>`` for a quarantined part folder whose ``part.json`` names valid UIDs."""
        if not item.is_dir():
            raise CannotRequeue("it is a file where a part folder should be: remove it")
        try:
            info = self.read_json(item / "part.json")
            study_uid, series_uid = str(info["study_uid"]), str(info["series_uid"])
            same_part = str(info["part_id"]) == item.name
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CannotRequeue(f"its part.json is unusable ({type(exc).__name__})") from exc
        if not same_part:
            raise CannotRequeue("its part.json names another part")
        self._requeue_uid(study_uid, "StudyInstanceUID in part.json")
        self._requeue_uid(series_uid, "SeriesInstanceUID in part.json")
        for member in item.glob("*.dcm"):
            self._requeue_uid(member.stem, "instance file name (SOPInstanceUID)")
        return self.root / PARTS / item.name

    def _outbox_destinations(self, held: list[Path]) -> list[tuple[Path, Path]]:
        """The zip, then its descriptor, back to ``outbox/`` (a zip alone there is ignored)."""
        zips = [p for p in held if p.suffix == ".zip"]
        descriptors = [p for p in held if p.suffix == ".json"]
        if len(zips) != 1 or len(descriptors) != 1 or zips[0].stem != descriptors[0].stem or len(held) != 2:
            raise CannotRequeue("it is not one zip with its descriptor (<part id>.zip and .json)")
        try:
            info = self.read_json(descriptors[0])
            uids = (str(info["study_uid"]), str(info["series_uid"]))
            needed = ("instance_count", "gateway_id", "manifest_sha256", "sop_instance_uids")
            missing = [key for key in needed if key not in info]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CannotRequeue(f"its outbox descriptor is unusable ({type(exc).__name__})") from exc
        if missing:
            raise CannotRequeue(f"its outbox descriptor lacks {', '.join(missing)}")
        self._requeue_uid(uids[0], "StudyInstanceUID in the descriptor")
        self._requeue_uid(uids[1], "SeriesInstanceUID in the descriptor")
        outbox = self.root / OUTBOX
        return [(zips[0], outbox / zips[0].name), (descriptors[0], outbox / descriptors[0].name)]

    @staticmethod
    def _requeue_uid(value: str, role: str) -> str:
        problem = uid_problem(value)
        if problem is not None:
            raise CannotRequeue(f"{role}: {problem}; it cannot be served: remove it")
        return value

    def read_json(self, path: Path) -> dict[str, Any]:
        """The JSON object in ``path``; raises OSError, or ValueError when it is not a JSON object."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return data

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        """Write ``data`` as JSON to ``path`` durably (temporary file, fsync, rename)."""
        write_durably(path, json.dumps(data, indent=1).encode(), self.root / TMP)
