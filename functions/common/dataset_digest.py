"""SHA-256 of an instance's data set: its identity whichever door it came through.

A C-STORE transfers only the data set (PS3.7 9.3.1); the File Meta Information
(PS3.10 7.1: 128-byte preamble, ``DICM``, group 0002 in Explicit VR Little Endian)
is written by whoever stores the file, so the same data set received by the gateway,
imported from disk or stored through STOW-RS carries different meta bytes. Comparing
versions by :class:`DatasetDigest` (everything after the meta) makes them the same content.
Bytes that are no Part 10 file are hashed whole.
"""

from __future__ import annotations

import hashlib
import struct

# The meta must end within the first HEAD bytes (real meta is a few hundred bytes); a file whose
# meta does not is hashed whole, the same way by every caller.
HEAD = 64 * 1024
# PS3.5 7.1.2: Explicit VR with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def dataset_offset(head: bytes) -> int:
    """Where the data set starts in a Part 10 file whose first bytes (up to :data:`HEAD`) are ``head``.

    0 when ``head`` is no Part 10 file (no ``DICM`` after the preamble, and no group 0002
    at the start) or its meta cannot be walked within ``head``: then the whole file counts.
    """
    if head[128:132] == b"DICM":
        pos = 132
    elif head[:2] == b"\x02\x00" and head[4:6].isalpha():
        pos = 0  # meta without preamble (not conformant, but read by pydicom)
    else:
        return 0
    while pos < len(head):
        if pos + 8 > len(head):
            return 0
        (group,) = struct.unpack_from("<H", head, pos)
        if group != 0x0002:
            return pos
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return 0
            (length,) = struct.unpack_from("<I", head, pos + 8)
            if length == 0xFFFFFFFF:
                return 0
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            pos += 8 + length
    return pos if pos == len(head) else 0


class DatasetDigest:
    """Incremental SHA-256 of the bytes after the File Meta Information, fed in any chunks.

    ``update(chunk)`` as the file is read; ``hexdigest()`` at the end (hex, 64 characters).
    Holds at most :data:`HEAD` bytes until the meta is found (bounded memory).
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._digest = hashlib.sha256()
        self._started = False

    def update(self, chunk: bytes) -> None:
        """Feed the file's next bytes."""
        if self._started:
            self._digest.update(chunk)
            return
        self._head += chunk
        if len(self._head) >= HEAD:
            self._start()

    def _start(self) -> None:
        head = bytes(self._head)
        self._digest.update(head[dataset_offset(head[:HEAD]) :])
        self._head = bytearray()
        self._started = True

    def hexdigest(self) -> str:
        """The SHA-256 (hex) of the data set fed so far; the file must be complete."""
        if not self._started:
            self._start()
        return self._digest.hexdigest()


def dataset_sha256(data: bytes) -> str:
    """SHA-256 (hex) of the data set of a Part 10 file held in memory (the whole bytes when none)."""
    digest = DatasetDigest()
    digest.update(data)
    return digest.hexdigest()
