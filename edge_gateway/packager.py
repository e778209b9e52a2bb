"""Zip a closed part into the outbox: members named by SOP Instance UID plus ``manifest.json``.

The zip is written under ``tmp/``, fsynced, and renamed into ``outbox/`` only
when complete, after its descriptor; the part folder is removed last. A crash
at any step leaves either the part folder (zip again) or a complete outbox
entry (upload it), never half of both.

Versions: an instance whose SOP Instance UID was already shipped (or waits in the
outbox) is compared with the LATEST version shipped by the SHA-256 of its data set
(``common.dataset_digest``: the same data set received or imported under other file
meta is the same content). The same bytes are
dropped and counted (``duplicates_dropped``); other bytes (a correction, or an
earlier version sent again to undo one) are shipped in this part
(``versions_shipped``), and the cloud decides (latest received wins). A part that cannot
be zipped (unreadable, bad ``part.json``, names that are no UID) is quarantined
with its reason; the other parts go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from common import part_format
from common.dataset_digest import DatasetDigest

from edge_gateway.assembler import PART_FILE
from edge_gateway.shipped import Latest, ShippedRecord, Versions, merge_latest
from edge_gateway.spool import (
    OUTBOX,
    PARTS,
    TMP,
    Spool,
    bump_counters,
    checked_uid,
    entry_problem,
    file_dataset_sha256,
    file_sha256,
    fsync_dir,
)

log = logging.getLogger(__name__)
MANIFEST_NAME = part_format.MANIFEST_NAME
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class OutboxEntry:
    """A zipped part waiting in the outbox: ``<part id>.zip`` and its ``<part id>.json`` descriptor."""

    part_id: str
    zip_path: Path
    descriptor: dict[str, Any]

    @property
    def object_key(self) -> str:
        """The part's S3 key, ``incoming/<study>/<series>/<part id>.zip`` (``common.part_format``)."""
        d = self.descriptor
        return part_format.object_key(d["study_uid"], d["series_uid"], self.part_id)


class Packager:
    """Turns closed parts into zips in the outbox (the part format of ``common.part_format``).

    Instances already shipped with the same bytes are left out; ``deflate`` chooses
    ZIP_DEFLATED over ZIP_STORED.
    """

    def __init__(self, spool: Spool, shipped: ShippedRecord, gateway_id: str, deflate: bool = False) -> None:
        self._spool = spool
        self._shipped = shipped
        self._gateway_id = gateway_id
        self._compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED

    def package(self, part_dir: Path) -> OutboxEntry | None:
        """Zip one part folder into the outbox; None when nothing in it needs shipping, or when
        the part was quarantined (its reason is in ``quarantine/``, shown by ``edge-gateway status``).

        Raises OSError only for spool-wide failures (disk full, read-only): retried later.
        """
        try:
            return self._package(part_dir)
        except Exception as exc:
            problem = entry_problem(exc)
            if problem is None:
                raise
            self._spool.quarantine([part_dir], f"part could not be zipped: {problem}")
            return None

    def _package(self, part_dir: Path) -> OutboxEntry | None:
        part_id = part_dir.name  # a name listed in parts/: one path component, never "." or ".."
        if not (part_dir / PART_FILE).exists():
            # A folder reaches parts/ with its part.json (one rename): without it, a removal was
            # cut short by a crash (spools of gateways before Spool.discard_folder).
            zipped = (self._spool.path(OUTBOX) / f"{part_id}.zip").exists()
            if zipped or not any(part_dir.iterdir()):
                self._remove(part_dir)
                return self.entry(part_id) if zipped else None
            raise ValueError("part.json is missing")  # quarantined with the instances it holds
        info = self._spool.read_json(part_dir / PART_FILE)
        if str(info["part_id"]) != part_id:
            raise ValueError("part.json names another part")
        study_uid = checked_uid(str(info["study_uid"]), "StudyInstanceUID")
        series_uid = checked_uid(str(info["series_uid"]), "SeriesInstanceUID")
        outbox = self._spool.path(OUTBOX)
        zip_path = outbox / f"{part_id}.zip"
        if zip_path.exists():  # zipped before a crash; the folder is left over
            self._remove(part_dir)
            return self.entry(part_id)
        candidates = sorted(part_dir.glob("*.dcm"))
        for member in candidates:
            checked_uid(member.stem, "SOPInstanceUID")
        members, dropped, versions = self._to_ship(series_uid, candidates)
        if not members:
            log.info("part %s holds only instances already shipped with the same bytes: dropped", part_id)
            self._remove(part_dir)
            bump_counters(self._spool.root, duplicates_dropped=dropped)
            return None
        tmp = self._spool.path(TMP) / f"{part_id}.zip"
        records: list[dict[str, Any]] = []  # the manifest's, with each member's SHA-256
        manifest_sha = self._write_zip(tmp, members, info, records)
        self._spool.account(tmp.stat().st_size)
        descriptor = {
            "part_id": part_id,
            "study_uid": study_uid,
            "series_uid": series_uid,
            "gateway_id": self._gateway_id,
            "instance_count": len(members),
            "sop_instance_uids": [p.stem for p in members],
            "instance_sha256": {r["sop_instance_uid"]: r["sha256"] for r in records},
            "instance_dataset_sha256": {r["sop_instance_uid"]: r["dataset_sha256"] for r in records},
            "manifest_sha256": manifest_sha,
            "zip_bytes": tmp.stat().st_size,
            "packaged_at": time.time(),
        }
        self._spool.write_json(outbox / f"{part_id}.json", descriptor)
        os.rename(tmp, zip_path)
        fsync_dir(outbox)
        self._remove(part_dir)
        if dropped or versions:  # after the zip is in place: a crash before it zips (and counts) again
            bump_counters(self._spool.root, duplicates_dropped=dropped, versions_shipped=versions)
        log.info(
            "part %s zipped: %d instances (%d new versions of shipped ones), %d bytes",
            part_id,
            len(members),
            versions,
            descriptor["zip_bytes"],
            extra={"part": part_id},
        )
        return OutboxEntry(part_id, zip_path, descriptor)

    def _to_ship(self, series_uid: str, candidates: list[Path]) -> tuple[list[Path], int, int]:
        """(members to zip, identical copies dropped, new versions of shipped instances).

        Only instances whose SOP Instance UID was shipped or waits in the outbox are hashed here.
        """
        # The outbox first: an entry the uploader confirms meanwhile is in the shipped record by
        # the time that record is read (it is written before the zip leaves the outbox).
        pending = self.outbox_versions(series_uid)
        known = merge_latest(self._shipped.versions(series_uid), pending)
        members: list[Path] = []
        dropped = versions = 0
        for member in candidates:
            latest = known.get(member.stem)
            if latest is None:
                members.append(member)
            elif latest.same_content(partial(file_sha256, member), partial(file_dataset_sha256, member)):
                dropped += 1
            else:
                members.append(member)
                versions += 1
        return members, dropped, versions

    def _write_zip(
        self, path: Path, members: list[Path], info: dict[str, Any], records: list[dict[str, Any]]
    ) -> str:
        """Write and fsync the zip; return the SHA-256 of its manifest, whose per-member records
        are appended to ``records``."""
        with zipfile.ZipFile(path, "w", compression=self._compression, allowZip64=True) as zf:
            for member in members:
                stat = member.stat()
                zinfo = zipfile.ZipInfo(member.name, time.gmtime(stat.st_mtime)[:6])
                zinfo.compress_type = self._compression
                zinfo.file_size = stat.st_size
                digest, of_dataset = hashlib.sha256(), DatasetDigest()
                with open(member, "rb") as src, zf.open(zinfo, "w", force_zip64=True) as dst:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        of_dataset.update(chunk)
                        dst.write(chunk)
                records.append(
                    part_format.instance_entry(
                        member.stem,
                        stat.st_size,
                        digest.hexdigest(),
                        stat.st_mtime,
                        member=member.name,
                        dataset_sha256=of_dataset.hexdigest(),
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

    def outbox_versions(self, series_uid: str) -> Versions:
        """The latest version of each instance of this series zipped in the outbox, not yet
        confirmed by S3 (SHA-256 "" for a descriptor of an older version, which recorded none).

        Without this, an instance re-sent while its first part waits for upload (a PACS
        retrying after a crash or an outage) would be shipped in two parts.
        """
        found: Versions = {}
        for entry in self.outbox():
            if entry.descriptor.get("series_uid") == series_uid:
                hashes = entry.descriptor.get("instance_sha256", {})
                datasets = entry.descriptor.get("instance_dataset_sha256", {})
                zipped = entry.descriptor.get("packaged_at")
                packaged_at = float(zipped) if isinstance(zipped, int | float) else 0.0
                merge_latest(
                    found,
                    {
                        str(uid): Latest(
                            str(hashes.get(str(uid)) or ""), packaged_at, str(datasets.get(str(uid)) or "")
                        )
                        for uid in entry.descriptor.get("sop_instance_uids", ())
                    },
                )
        return found

    def entry(self, part_id: str) -> OutboxEntry:
        """The outbox entry of ``part_id``; raises OSError, or ValueError for a bad descriptor."""
        outbox = self._spool.path(OUTBOX)
        return OutboxEntry(
            part_id, outbox / f"{part_id}.zip", self._spool.read_json(outbox / f"{part_id}.json")
        )

    def _remove(self, part_dir: Path) -> None:
        size = sum(p.stat().st_size for p in part_dir.iterdir() if p.is_file())
        self._spool.discard_folder(part_dir)
        self._spool.account(-size)

    def pending(self) -> list[Path]:
        """Closed part folders, oldest close first: of two versions of an instance in two parts,
        the later one is zipped (and compared with the earlier one) last."""
        return sorted((p for p in self._spool.path(PARTS).iterdir() if p.is_dir()), key=self._closed_at)

    def _closed_at(self, part_dir: Path) -> tuple[float, str]:
        try:
            return float(self._spool.read_json(part_dir / PART_FILE)["closed_at"]), part_dir.name
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0, part_dir.name  # package() quarantines it, or zips a crash leftover

    def _zip_will_come(self, descriptor: Path, zip_path: Path) -> bool:
        """For a descriptor seen without its zip: True when the zip is there after all.

        The other coordinator thread may be half-way: ``package`` writes the descriptor, renames
        the zip in, then removes the part folder; the uploader deletes the zip, then the
        descriptor. So the part folder is looked at before the zip is looked at again: a folder
        still there means a zip is on its way (or will be made again after a crash); the zip
        present now means the packager finished meanwhile (its descriptor must stay). Only
        with neither is the descriptor a leftover: of an upload just confirmed (the uploader
        may be deleting it right now) or of a crash before the zip was renamed in.
        """
        if (self._spool.path(PARTS) / descriptor.stem).exists():
            return False
        if zip_path.exists():
            return True
        descriptor.unlink(missing_ok=True)
        return False

    def outbox(self) -> list[OutboxEntry]:
        """Complete outbox entries, oldest first; a descriptor without its zip is a crash leftover,
        an unreadable descriptor is quarantined with its zip."""
        entries: list[OutboxEntry] = []
        for descriptor in sorted(self._spool.path(OUTBOX).glob("*.json")):
            part_id = descriptor.stem
            zip_path = descriptor.parent / f"{part_id}.zip"
            if not zip_path.exists() and not self._zip_will_come(descriptor, zip_path):
                continue
            try:
                entry = self.entry(part_id)
                for key in ("study_uid", "series_uid"):
                    checked_uid(str(entry.descriptor[key]), key)
                needed = ("instance_count", "gateway_id", "manifest_sha256", "sop_instance_uids")
                if not all(key in entry.descriptor for key in needed):
                    raise KeyError("descriptor lacks a field the upload needs")
            except Exception as exc:
                problem = entry_problem(exc)
                if problem is None:
                    if isinstance(exc, FileNotFoundError):
                        continue  # uploaded meanwhile
                    raise
                with contextlib.suppress(FileNotFoundError):  # the other coordinator thread was first
                    self._spool.quarantine([descriptor, zip_path], f"outbox entry unusable: {problem}")
                continue
            entries.append(entry)
        return entries
