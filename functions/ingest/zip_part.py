"""Open a series part (a zip written by the edge gateway) and read its members' headers safely.

Order of reads, each one a ranged GET:

1. the object's tail (end-of-central-directory record, and usually the whole
   central directory with it). The entry count and directory size are checked
   against limits *before* the directory is parsed, so 100,000 tiny members are
   refused after one request and a few hundred bytes;
2. the central directory (when the tail did not hold it), parsed by ``zipfile``;
   every entry is checked (unsafe name, declared size, compression ratio,
   method, encryption) before any member is opened;
3. per member, its local header and the first ``prefetch`` bytes of its data
   (in parallel, see ``process``); ``MemberStream`` serves pydicom from that
   buffer and fetches more only if the header is longer.

A member is never decompressed or read past ``MAX_HEADER_BYTES``: pixel data is
not needed, and a header bigger than that is refused with a reason, so neither
a zip bomb nor a member claiming gigabytes costs memory.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

from common import zip_members
from common.part_format import MANIFEST_NAME
from common.s3_reader import S3RangeReader, SeekableReader

MAX_MEMBERS = 20_000
# 20,000 entries with names of ~70 bytes and zip64 extras stay far below this.
MAX_DIRECTORY_BYTES = 8 * 1024**2
MAX_MEMBER_SIZE = 4 * 1024**3
MAX_MANIFEST_SIZE = 16 * 1024**2
MAX_COMPRESSION_RATIO = 200
# A header (everything before the pixel data) larger than this is refused.
MAX_HEADER_BYTES = 32 * 1024**2
# First read of each member: local header + this many data bytes (a CT header is 1-10 KB).
DEFAULT_PREFETCH = 16 * 1024
# When the first read was not enough, each further read is this much larger (x4), up to 4 MiB.
_GROWTH = 4
_MAX_STEP = 4 * 1024**2
_TAIL_BYTES = 64 * 1024 + 22 + 20 + 56

_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


class RejectedPart(Exception):
    """The whole object is refused; the message is the reason (no PHI)."""


class UnreadableMember(Exception):
    """One member cannot be read; the message is the reason (no PHI)."""


class HeaderTooLarge(UnreadableMember):
    """A member's header is larger than MAX_HEADER_BYTES before its pixel data."""

    pass


@dataclass(frozen=True)
class Member:
    """One zip entry of a part, from its central directory: sizes and offsets in bytes.

    ``sha256`` is the manifest's digest of the member, ``dataset_sha256`` of its data set
    (after the File Meta Information, ``common.dataset_digest``); "" when the manifest has none.
    """

    name: str
    size: int
    compressed_size: int
    crc: int
    compress_type: int
    header_offset: int
    # Where the member's bytes end in the object (next member's local header or the directory).
    end_offset: int
    sha256: str = ""
    dataset_sha256: str = ""

    @property
    def crc_fingerprint(self) -> str:
        """Identity of the member's bytes from the central directory alone (CRC-32 and size)."""
        return f"crc32:{self.crc:08x}:{self.size}"

    @property
    def fingerprint(self) -> str:
        """The manifest's SHA-256 when the gateway wrote one, else CRC-32 and size."""
        return f"sha256:{self.sha256}" if self.sha256 else self.crc_fingerprint

    def same_bytes(self, fingerprint: str, crc_fingerprint: str, dataset_sha256: str = "") -> bool:
        """Whether another copy (given by its stored fingerprints) has the same content: the same
        data set when both digests of it are known (the file meta may differ), else the same bytes."""
        if self.dataset_sha256 and dataset_sha256:
            return self.dataset_sha256 == dataset_sha256
        if self.sha256 and fingerprint.startswith("sha256:"):
            return fingerprint == self.fingerprint
        return (crc_fingerprint or fingerprint) == self.crc_fingerprint


@dataclass
class Part:
    """A part's zip opened for reading: its DICOM members, the entries rejected (name -> reason).

    ``manifest`` is the parsed ``manifest.json``; ``entries`` counts every zip entry.
    """

    reader: S3RangeReader
    members: list[Member]
    rejected: dict[str, str]
    manifest: dict[str, Any]
    entries: int = 0
    notes: list[str] = field(default_factory=list)

    def open(self, member: Member, prefetched: bytes | None = None) -> MemberStream:
        """A seekable stream of ``member``'s uncompressed bytes (``prefetched``: its first bytes)."""
        return MemberStream(self.reader, member, prefetched)


def prefetch_range(member: Member, prefetch: int = DEFAULT_PREFETCH) -> tuple[int, int]:
    """Inclusive byte range of the first read of a member: local header plus ``prefetch`` data bytes."""
    # Local header: 30 bytes + name + extra field (zip64 extras are 20 bytes; allow for more).
    want = 30 + len(member.name.encode()) + 64 + prefetch
    end = min(member.end_offset, member.header_offset + want)
    return member.header_offset, end - 1


def _directory_limits(reader: S3RangeReader) -> tuple[int, int, int]:
    """(entry count, directory size, directory offset) from the end records, checked against limits."""
    size = reader.size
    if size < _EOCD.size:
        raise RejectedPart("not a zip file: too short")
    tail_start = max(0, size - _TAIL_BYTES)
    tail = reader.fetch(tail_start, size - 1)
    reader.pin(tail_start, tail)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        raise RejectedPart("not a zip file: no end of central directory record")
    _sig, _disk, _cd_disk, _n_disk, entries, cd_size, cd_offset, _comment = _EOCD.unpack_from(tail, at)
    if 0xFFFF in (entries,) or 0xFFFFFFFF in (cd_size, cd_offset):
        loc = at - _ZIP64_LOCATOR.size
        if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
            raise RejectedPart("not a zip file: zip64 locator missing")
        _s, _d, eocd64_offset, _disks = _ZIP64_LOCATOR.unpack_from(tail, loc)
        rel = eocd64_offset - tail_start
        if rel < 0 or rel + _ZIP64_EOCD.size > len(tail) or tail[rel : rel + 4] != b"PK\x06\x06":
            raise RejectedPart("not a zip file: zip64 end record missing")
        fields = _ZIP64_EOCD.unpack_from(tail, rel)
        entries, cd_size, cd_offset = fields[7], fields[8], fields[9]
    if entries > MAX_MEMBERS + 1:
        raise RejectedPart(f"too many members: {entries} > {MAX_MEMBERS}")
    if cd_size > MAX_DIRECTORY_BYTES:
        raise RejectedPart(f"central directory too large: {cd_size} bytes > {MAX_DIRECTORY_BYTES}")
    if cd_offset + cd_size > size:
        raise RejectedPart("not a zip file: central directory beyond the end of the object")
    if cd_offset < tail_start and cd_size:
        reader.pin(cd_offset, reader.fetch(cd_offset, cd_offset + cd_size - 1))
    return entries, cd_size, cd_offset


def _unsafe_name(name: str) -> str | None:
    if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
        return "unsafe member name (absolute or parent path)"
    if "/" in name or "\\" in name:
        return "member in a sub-folder (parts are flat)"
    if ":" in name or "\x00" in name:
        return "unsafe member name (drive or NUL character)"
    return None


def _entry_problem(info: zipfile.ZipInfo) -> str | None:  # noqa: PLR0911 - one check, one reason
    reason = _unsafe_name(info.filename)
    if reason:
        return reason
    if info.flag_bits & 0x1:
        return "encrypted member"
    if info.file_size > MAX_MEMBER_SIZE:
        return f"member too large: {info.file_size} bytes > {MAX_MEMBER_SIZE}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"unsupported compression method {info.compress_type}"
    if (
        info.compress_type == zipfile.ZIP_DEFLATED
        and info.file_size > max(info.compress_size, 1024) * MAX_COMPRESSION_RATIO
    ):
        return "compression ratio beyond limit (zip bomb)"
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        return "stored member whose sizes disagree"
    return None


def open_part(reader: S3RangeReader) -> Part:
    """Read and check the central directory; nothing of the members is read yet except the manifest."""
    entries, _cd_size, cd_offset = _directory_limits(reader)
    try:
        archive = zipfile.ZipFile(reader)
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as exc:
        raise RejectedPart(f"not a zip file: {exc}") from exc
    infos = archive.infolist()
    ends = _end_offsets(infos, cd_offset)
    rejected: dict[str, str] = {}
    candidates: list[Member] = []
    manifest_member: Member | None = None
    seen: set[str] = set()
    for info in infos:
        if info.is_dir():
            continue
        reason = _entry_problem(info)
        if reason is None and info.filename in seen:
            reason = "member name repeated in the zip"
        if reason is None and info.header_offset >= cd_offset:
            reason = "member offset outside the data area"
        seen.add(info.filename)
        if reason:
            rejected[info.filename] = reason
            continue
        member = Member(
            name=info.filename,
            size=info.file_size,
            compressed_size=info.compress_size,
            crc=info.CRC,
            compress_type=info.compress_type,
            header_offset=info.header_offset,
            end_offset=ends[info.header_offset],
        )
        if info.filename == MANIFEST_NAME:
            manifest_member = member
        else:
            candidates.append(member)
    part = Part(reader, candidates, rejected, {}, entries=entries)
    if manifest_member is not None:
        part.manifest = _read_manifest(part, manifest_member)
        if not part.manifest:
            part.notes.append("manifest.json unreadable: fingerprints from CRC-32")
        digests = _manifest_digests(part.manifest)
        datasets = _manifest_digests(part.manifest, "dataset_sha256")
        part.members = [
            Member(
                **{
                    **m.__dict__,
                    "sha256": digests.get(m.name, ""),
                    "dataset_sha256": datasets.get(m.name, ""),
                }
            )
            for m in part.members
        ]
    return part


def _end_offsets(infos: list[zipfile.ZipInfo], cd_offset: int) -> dict[int, int]:
    offsets = sorted({i.header_offset for i in infos})
    ends = {start: end for start, end in zip(offsets, [*offsets[1:], cd_offset], strict=True)}
    return ends


def _read_manifest(part: Part, member: Member) -> dict[str, Any]:
    if member.size > MAX_MANIFEST_SIZE:
        return {}
    try:
        with part.open(member) as fp:
            data = json.loads(fp.read(MAX_MANIFEST_SIZE + 1))
    except (ValueError, UnreadableMember, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _manifest_digests(manifest: dict[str, Any], field_name: str = "sha256") -> dict[str, str]:
    digests: dict[str, str] = {}
    instances = manifest.get("instances")
    if not isinstance(instances, list):
        return digests
    for entry in instances:
        if isinstance(entry, dict) and isinstance(entry.get("member"), str):
            sha = str(entry.get(field_name) or "").lower()
            if len(sha) == 64 and all(c in "0123456789abcdef" for c in sha):
                digests[entry["member"]] = sha
    return digests


class MemberStream(SeekableReader):
    """The uncompressed bytes of one member, readable and seekable, read lazily and bounded.

    STORED members are random access over ranged reads; DEFLATED members are
    inflated incrementally, keeping what was inflated so far (at most
    ``MAX_HEADER_BYTES``) so that pydicom can seek back a few bytes.
    """

    def __init__(self, reader: S3RangeReader, member: Member, prefetched: bytes | None = None) -> None:
        super().__init__()
        self._reader = reader
        self.member = member
        self._pos = 0
        self._step = DEFAULT_PREFETCH
        start, end = prefetch_range(member)
        first = prefetched if prefetched is not None else reader.fetch(start, end)
        try:
            self._data_start = zip_members.data_start(first, member.header_offset)
        except zip_members.MemberError as exc:
            raise UnreadableMember(str(exc)) from exc
        if self._data_start + member.compressed_size > member.end_offset:
            raise UnreadableMember("zip member overlaps the next one")
        # Raw (possibly compressed) bytes buffered: [buf_start, buf_start + len(buf)) relative to data start.
        self._buf_start = 0
        self._buf = first[self._data_start - member.header_offset :][: member.compressed_size]
        self._stored = member.compress_type == zipfile.ZIP_STORED
        if not self._stored:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            self._raw_pos = 0
            self._out = bytearray()
            self._inflated_all = False
        self.budget_exceeded = False
        self.truncated = False

    def buffered_head(self) -> bytes | None:
        """The member's first bytes already in memory (STORED, nothing read yet), else None."""
        if self._stored and self._buf_start == 0 and self._pos == 0 and self._buf:
            return self._buf
        return None

    @property
    def data_offset(self) -> int:
        """Offset in the object of the member's (possibly compressed) data."""
        return int(self._data_start)

    def _length(self) -> int:
        return self.member.size

    def read(self, size: int | None = -1) -> bytes:
        """Fast path for pydicom's many small reads (served from the buffer); notes short reads."""
        pos = self._pos
        if size is None or size < 0:
            size = self.member.size - pos
        end = min(pos + size, self.member.size)
        if self._stored and end <= MAX_HEADER_BYTES and self._buf_start <= pos:
            offset = pos - self._buf_start
            if end - self._buf_start <= len(self._buf):
                self._pos = end
                data = self._buf[offset : offset + end - pos]
                if len(data) < size:
                    self._note_short(len(data), size)
                return data
        data = super().read(size)
        if len(data) < size:
            self._note_short(len(data), size)
        return data

    def _note_short(self, got: int, size: int) -> None:
        # A clean end of data set ends on an element boundary: the next tag (8 bytes) or the
        # one-byte peek find nothing. Anything else read short is a cut-off element.
        if got or size not in (1, 8):
            self.truncated = True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with the member's bytes from the current position (stored or inflated).

        Raises HeaderTooLarge past MAX_HEADER_BYTES, so that a header without end is not read whole.
        """
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.member.size - self._pos))
        if wanted <= 0:
            return 0
        if self._pos + wanted > MAX_HEADER_BYTES:
            self.budget_exceeded = True
            raise HeaderTooLarge(f"header larger than {MAX_HEADER_BYTES // 1024**2} MiB before pixel data")
        data = self._read_stored(wanted) if self._stored else self._read_inflated(wanted)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _raw(self, pos: int, length: int) -> bytes:
        """Raw member bytes ``pos .. pos+length`` (relative to the data start), fetching if needed."""
        end = min(pos + length, self.member.compressed_size)
        if pos >= end:
            return b""
        buf_end = self._buf_start + len(self._buf)
        if not (self._buf_start <= pos and end <= buf_end):
            self._step = min(self._step * _GROWTH, _MAX_STEP)
            fetch_end = min(self.member.compressed_size, max(end, pos + self._step))
            self._buf = self._reader.fetch(self._data_start + pos, self._data_start + fetch_end - 1)
            self._buf_start = pos
            if len(self._buf) < fetch_end - pos:
                end = min(end, pos + len(self._buf))
        return self._buf[pos - self._buf_start : end - self._buf_start]

    def _read_stored(self, wanted: int) -> bytes:
        return self._raw(self._pos, wanted)

    def _read_inflated(self, wanted: int) -> bytes:
        target = self._pos + wanted
        while len(self._out) < target and not self._inflated_all:
            chunk = self._inflater.unconsumed_tail or self._raw(self._raw_pos, 64 * 1024)
            if not self._inflater.unconsumed_tail:
                self._raw_pos += len(chunk)
            if not chunk:
                break
            room = MAX_HEADER_BYTES + 1 - len(self._out)
            try:
                self._out += self._inflater.decompress(chunk, max(1, min(room, 256 * 1024)))
            except zlib.error as exc:
                raise UnreadableMember("corrupt deflate data in zip member") from exc
            if self._inflater.eof:
                self._inflated_all = True
            if len(self._out) > MAX_HEADER_BYTES:
                self.budget_exceeded = True
                raise HeaderTooLarge(
                    f"header larger than {MAX_HEADER_BYTES // 1024**2} MiB before pixel data"
                )
        return bytes(self._out[self._pos : target])
