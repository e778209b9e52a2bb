"""Open a series part (a zip written by the edge gateway) and walk its DICOM members safely.

The central directory is read first and checked against limits before any
member is opened: a zip bomb, a member claiming gigabytes, path-traversal names
or an absurd member count are refused with a reason instead of being read.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from typing import IO, Any

MANIFEST_NAME = "manifest.json"
MAX_MEMBERS = 20_000
MAX_MEMBER_SIZE = 4 * 1024**3
MAX_MANIFEST_SIZE = 16 * 1024**2
# A header is read up to the pixel data; no member needs more than this to get there.
MAX_COMPRESSION_RATIO = 200


class RejectedPart(Exception):
    """The whole object is refused; the message is the reason (no PHI)."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    compressed_size: int
    crc: int
    info: zipfile.ZipInfo

    @property
    def fingerprint(self) -> str:
        """Identity of the member's bytes, from the central directory alone (CRC-32 and size)."""
        return f"crc32:{self.crc:08x}:{self.size}"


@dataclass
class Part:
    zip: zipfile.ZipFile
    members: list[Member]
    rejected: dict[str, str]
    manifest: dict[str, Any]

    def open(self, member: Member) -> IO[bytes]:
        return self.zip.open(member.info)


def _unsafe_name(name: str) -> str | None:
    if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
        return "unsafe member name (absolute or parent path)"
    if "/" in name or "\\" in name:
        return "member in a sub-folder (parts are flat)"
    return None


def open_part(fileobj: IO[bytes]) -> Part:
    try:
        archive = zipfile.ZipFile(fileobj)
    except zipfile.BadZipFile as exc:
        raise RejectedPart(f"not a zip file: {exc}") from exc
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS + 1:
        raise RejectedPart(f"too many members: {len(infos)} > {MAX_MEMBERS}")
    members: list[Member] = []
    rejected: dict[str, str] = {}
    manifest: dict[str, Any] = {}
    for info in infos:
        if info.is_dir():
            continue
        reason = _unsafe_name(info.filename)
        if reason is None and info.file_size > MAX_MEMBER_SIZE:
            reason = f"member too large: {info.file_size} bytes"
        if (
            reason is None
            and info.compress_size
            and (info.file_size / info.compress_size > MAX_COMPRESSION_RATIO)
        ):
            reason = "compression ratio beyond limit (zip bomb)"
        if reason is None and info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            reason = f"unsupported compression method {info.compress_type}"
        if reason:
            rejected[info.filename] = reason
            continue
        if info.filename == MANIFEST_NAME:
            manifest = _read_manifest(archive, info)
            continue
        members.append(Member(info.filename, info.file_size, info.compress_size, info.CRC, info))
    return Part(archive, members, rejected, manifest)


def _read_manifest(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    if info.file_size > MAX_MANIFEST_SIZE:
        return {}
    try:
        data = json.loads(archive.read(info))
    except (ValueError, zipfile.BadZipFile):
        return {}
    return data if isinstance(data, dict) else {}
