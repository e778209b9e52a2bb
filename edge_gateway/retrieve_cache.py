"""A size-limited disk cache of retrieved instances: a prior fetched twice comes from disk the second time.

Files are named ``<SOP Instance UID>-<member fingerprint>.dcm``: a new version of an
instance (other bytes, other fingerprint) is a different entry, never a stale hit.
Least recently used entries go first when ``max_bytes`` is exceeded (a hit refreshes
the file's mtime). The cache lives next to the spool, not inside it, so that it never
counts against ``max_spool_bytes``. Holds PHI like the spool: same disk, same permissions.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import uuid
from pathlib import Path

SAFE = re.compile(r"^[0-9A-Za-z._-]{1,160}$")


class RetrieveCache:
    """Thread-safe; shared by the processes serving the port (each keeps its own running total)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._used = sum(p.stat().st_size for p in folder.glob("*.dcm"))
        self.hits = 0
        self.misses = 0

    def _path(self, sop_uid: str, fingerprint: str) -> Path | None:
        version = hashlib.sha256(fingerprint.encode()).hexdigest()[:24]
        name = f"{sop_uid}-{version}"
        return self.folder / f"{name}.dcm" if SAFE.match(name) else None

    def path(self, sop_uid: str, fingerprint: str) -> Path | None:
        """The cached file of this version of an instance (refreshed as most recently used), or None
        (counted as a miss). The file may be evicted later: readers must expect FileNotFoundError."""
        path = self._path(sop_uid, fingerprint)
        try:
            if path is None:
                raise FileNotFoundError
            os.utime(path)  # most recently used
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return path

    def get(self, sop_uid: str, fingerprint: str) -> bytes | None:
        """The cached Part 10 bytes of this version of an instance, or None (counted as a miss)."""
        path = self.path(sop_uid, fingerprint)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:  # evicted since: the hit is counted, the caller fetches again
            return None

    def put(self, sop_uid: str, fingerprint: str, data: bytes) -> Path | None:
        """Keep a copy (write to a temporary name, then rename); evict the oldest above the limit.

        Returns the cached file, or None when it was not kept (too large, unsafe name, disk full).
        """
        path = self._path(sop_uid, fingerprint)
        if path is None or len(data) > self.max_bytes:
            return None
        tmp = self.folder / f".{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:  # a full disk only costs the cache entry
            tmp.unlink(missing_ok=True)
            return None
        with self._lock:
            self._used += len(data)
            over = self._used > self.max_bytes
        if over:
            self._evict()
        return path

    def _evict(self) -> None:
        entries = []
        for path in self.folder.glob("*.dcm"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort()
        used = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if used <= self.max_bytes * 0.9:  # some headroom: not an eviction per put
                break
            path.unlink(missing_ok=True)
            used -= size
        with self._lock:
            self._used = used
