"""Zip a closed part into the outbox: members named by SOP Instance UID plus ``manifest.json``.

The zip is written under ``tmp/``, fsynced, and renamed into ``outbox/`` only
when complete, after its descriptor; the part folder is removed last. A crash
at any step leaves either the part folder (zip again) or a complete outbox
entry (upload it), never half of both.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import part_format

from edge_gateway.assembler import PART_FILE
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import OUTBOX, TMP, Spool, fsync_dir

log = logging.getLogger(__name__)
MANIFEST_NAME = part_format.MANIFEST_NAME
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class OutboxEntry:
    part_id: str
    zip_path: Path
    descriptor: dict[str, Any]

    @property
    def object_key(self) -> str:
        d = self.descriptor
        return part_format.object_key(d["study_uid"], d["series_uid"], self.part_id)


class Packager:
    def __init__(self, spool: Spool, shipped: ShippedRecord, gateway_id: str, deflate: bool = False) -> None:
        self._spool = spool
        self._shipped = shipped
        self._gateway_id = gateway_id
        self._compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED

    def package(self, part_dir: Path) -> OutboxEntry | None:
        """Zip one part folder into the outbox; None when nothing in it needs shipping."""
        info = self._spool.read_json(part_dir / PART_FILE)
        part_id = str(info["part_id"])
        outbox = self._spool.path(OUTBOX)
        zip_path = outbox / f"{part_id}.zip"
        if zip_path.exists():  # zipped before a crash; the folder is left over
            self._remove(part_dir)
            return self.entry(part_id)
        already = self._shipped.shipped(str(info["series_uid"])) | self._waiting(str(info["series_uid"]))
        members = [p for p in sorted(part_dir.glob("*.dcm")) if p.stem not in already]
        if not members:
            log.info("part %s holds only instances already shipped: dropped", part_id)
            self._remove(part_dir)
            return None
        tmp = self._spool.path(TMP) / f"{part_id}.zip"
        manifest_sha = self._write_zip(tmp, members, info)
        self._spool.account(tmp.stat().st_size)
        descriptor = {
            "part_id": part_id,
            "study_uid": info["study_uid"],
            "series_uid": info["series_uid"],
            "gateway_id": self._gateway_id,
            "instance_count": len(members),
            "sop_instance_uids": [p.stem for p in members],
            "manifest_sha256": manifest_sha,
            "zip_bytes": tmp.stat().st_size,
            "packaged_at": time.time(),
        }
        self._spool.write_json(outbox / f"{part_id}.json", descriptor)
        os.rename(tmp, zip_path)
        fsync_dir(outbox)
        self._remove(part_dir)
        log.info(
            "part %s zipped: %d instances, %d bytes",
            part_id,
            len(members),
            descriptor["zip_bytes"],
            extra={"part": part_id},
        )
        return OutboxEntry(part_id, zip_path, descriptor)

    def _write_zip(self, path: Path, members: list[Path], info: dict[str, Any]) -> str:
        """Write and fsync the zip; return the SHA-256 of its manifest."""
        records: list[dict[str, Any]] = []
        with zipfile.ZipFile(path, "w", compression=self._compression, allowZip64=True) as zf:
            for member in members:
                stat = member.stat()
                zinfo = zipfile.ZipInfo(member.name, time.gmtime(stat.st_mtime)[:6])
                zinfo.compress_type = self._compression
                zinfo.file_size = stat.st_size
                digest = hashlib.sha256()
                with open(member, "rb") as src, zf.open(zinfo, "w", force_zip64=True) as dst:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                records.append(
                    part_format.instance_entry(
                        member.stem, stat.st_size, digest.hexdigest(), stat.st_mtime, member=member.name
                    )
                )
            manifest = part_format.manifest_bytes(
                self._gateway_id,
                str(info["part_id"]),
                str(info["study_uid"]),
                str(info["series_uid"]),
                records,
            )
            zf.writestr(MANIFEST_NAME, manifest, compress_type=zipfile.ZIP_DEFLATED)
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
        return part_format.manifest_sha256(manifest)

    def _waiting(self, series_uid: str) -> set[str]:
        """SOP Instance UIDs of this series already zipped in the outbox, not yet confirmed by S3.

        Without this, an instance re-sent while its first part waits for upload (a PACS
        retrying after a crash or an outage) would be shipped in two parts.
        """
        uids: set[str] = set()
        for entry in self.outbox():
            if entry.descriptor.get("series_uid") == series_uid:
                uids.update(str(u) for u in entry.descriptor.get("sop_instance_uids", ()))
        return uids

    def entry(self, part_id: str) -> OutboxEntry:
        outbox = self._spool.path(OUTBOX)
        return OutboxEntry(
            part_id, outbox / f"{part_id}.zip", self._spool.read_json(outbox / f"{part_id}.json")
        )

    def _remove(self, part_dir: Path) -> None:
        size = sum(p.stat().st_size for p in part_dir.iterdir() if p.is_file())
        shutil.rmtree(part_dir)
        fsync_dir(part_dir.parent)
        self._spool.account(-size)

    def pending(self) -> list[Path]:
        return sorted(p for p in self._spool.path("parts").iterdir() if p.is_dir())

    def outbox(self) -> list[OutboxEntry]:
        """Complete outbox entries, oldest first; a descriptor without its zip is a crash leftover."""
        entries: list[OutboxEntry] = []
        for descriptor in sorted(self._spool.path(OUTBOX).glob("*.json")):
            part_id = descriptor.stem
            if (descriptor.parent / f"{part_id}.zip").exists():
                entries.append(self.entry(part_id))
            elif not (self._spool.path("parts") / part_id).exists():
                descriptor.unlink()
        return entries
