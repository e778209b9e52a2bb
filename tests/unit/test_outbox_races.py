"""The outbox read by both coordinator threads while the other one changes it.

The assemble thread (``Packager.package`` and its ``outbox_versions``) and the upload thread
(``Packager.outbox`` then ``Uploader.upload``) both list the outbox. Each test stops one
thread between two of its file-system looks and runs the other thread's step right there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_gateway.assembler import Assembler
from edge_gateway.packager import OutboxEntry, Packager
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import OUTBOX, PARTS, SHIPPED, Spool
from edge_gateway.uploader import Uploader
from tests.conftest import Aws

STABLE = 10.0
STUDY, SERIES, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"


def closed_part(tmp_path: Path, aws: Aws) -> tuple[Spool, Packager, Uploader, Path]:
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    assembler = Assembler(spool, STABLE, 1000, 10**9)
    shipped = ShippedRecord(spool.path(SHIPPED), retention_seconds=3600)
    uploader = Uploader(aws.s3, aws.bucket, spool, shipped)  # S3 of the moto stand-in
    data = b"dicom bytes"
    assert spool.store(STUDY, SERIES, SOP, data)
    assembler.stored(STUDY, SERIES, len(data))
    [part] = assembler.close_ready(now=max(s.last_change() for s in spool.open_series()) + STABLE)
    return spool, Packager(spool, shipped, "gw-test"), uploader, part


def on_first_look(monkeypatch: pytest.MonkeyPatch, watched: Path, step: Callable[[], None]) -> list[int]:
    """Run ``step`` (the other thread) right after the first ``exists()`` of ``watched`` answered."""
    real_exists = Path.exists
    looks: list[int] = []

    def exists(self: Path, *args: object, **kwargs: object) -> bool:
        answer = real_exists(self)
        if self == watched:
            looks.append(1)
            if len(looks) == 1:
                step()
        return answer

    monkeypatch.setattr(Path, "exists", exists)
    return looks


def test_descriptor_seen_before_its_zip_is_renamed_in_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: Aws
) -> None:
    # GIVEN the packager half-way: descriptor written, the zip still in tmp/, the part folder there
    spool, packager, _uploader, part = closed_part(tmp_path, aws)
    with monkeypatch.context() as m:
        m.setattr(os, "rename", _stop_here)
        with pytest.raises(_Stopped):
            packager.package(part)
    zip_path = spool.path(OUTBOX) / f"{part.name}.zip"
    descriptor = zip_path.with_suffix(".json")
    assert descriptor.exists() and not zip_path.exists() and part.exists()

    def packager_finishes() -> None:
        os.rename(spool.path("tmp") / zip_path.name, zip_path)
        packager._remove(part)

    # WHEN the upload thread lists the outbox and the packager finishes right after it saw no zip
    looks = on_first_look(monkeypatch, zip_path, packager_finishes)
    listed = packager.outbox()
    monkeypatch.undo()

    # THEN the descriptor was kept (the zip is not orphaned): the part is listed for upload
    assert looks, "the interleaving was not forced"
    assert [entry.part_id for entry in listed] == [part.name]
    assert descriptor.exists() and zip_path.exists()
    assert [entry.part_id for entry in packager.outbox()] == [part.name]


def test_descriptor_deleted_by_the_uploader_meanwhile_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: Aws
) -> None:
    # GIVEN a part zipped into the outbox, and the uploader confirming it, held after it
    # deleted the zip and before it deletes the descriptor
    spool, packager, uploader, part = closed_part(tmp_path, aws)
    entry = packager.package(part)
    assert isinstance(entry, OutboxEntry) and not part.exists()
    zip_deleted, go_on = threading.Event(), threading.Event()
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self, missing_ok=missing_ok)
        if self == entry.zip_path:
            zip_deleted.set()
            assert go_on.wait(60)

    monkeypatch.setattr(Path, "unlink", unlink)
    confirming = threading.Thread(target=uploader.upload, args=(entry,))
    confirming.start()
    assert zip_deleted.wait(60)

    def uploader_finishes() -> None:
        go_on.set()
        confirming.join()

    # WHEN the assemble thread lists the outbox (outbox_versions) and the uploader finishes
    # right after the part folder was looked at
    looks = on_first_look(monkeypatch, spool.path(PARTS) / part.name, uploader_finishes)
    try:
        entries = packager.outbox()  # raised FileNotFoundError ("coordinator step failed") before
    finally:
        go_on.set()
        confirming.join()
        monkeypatch.undo()

    # THEN nothing is listed, nothing is left, and the part is recorded as shipped
    assert looks, "the interleaving was not forced"
    assert entries == []
    assert list(spool.path(OUTBOX).iterdir()) == []
    assert uploader.stats.uploaded_parts == 1


class _Stopped(Exception):
    pass


def _stop_here(*_args: object) -> None:
    raise _Stopped
