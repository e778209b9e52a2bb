"""A part folder is removed whole or not at all: a crash inside the removal never stalls packaging.

Seen under load in the e2e tier: ``kill -9`` during ``shutil.rmtree`` of a zipped part left its
folder in ``parts/`` without ``part.json``; the restarted packager failed on it every 5 s and
zipped nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_gateway.spool import OUTBOX, PARTS, TMP, Spool
from tests.conftest import Aws
from tests.unit.test_outbox_races import closed_part


class Crash(BaseException):
    """The process dies here (nothing after this point runs)."""


def _crash(*_args: object, **_kwargs: object) -> None:
    raise Crash


def test_a_crash_inside_the_removal_of_a_zipped_part_leaves_nothing_half_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: Aws
) -> None:
    # GIVEN a closed part whose zip is in the outbox, and a crash while its folder is deleted
    spool, packager, _uploader, part = closed_part(tmp_path, aws)
    monkeypatch.setattr("edge_gateway.spool.shutil.rmtree", _crash)
    with pytest.raises(Crash):
        packager.package(part)
    monkeypatch.undo()
    # THEN parts/ no longer lists it, the zip and its descriptor wait in the outbox
    assert list(spool.path(PARTS).iterdir()) == []
    assert sorted(p.suffix for p in spool.path(OUTBOX).iterdir()) == [".json", ".zip"]
    # AND the restarted gateway removes what the crash left in tmp/ and has nothing to retry
    restarted = Spool(spool.root, max_bytes=10**9)
    restarted.recover()
    assert list(restarted.path(TMP).iterdir()) == []
    assert packager.pending() == []
    assert [entry.part_id for entry in packager.outbox()] == [part.name]


def test_a_half_deleted_part_folder_left_by_an_older_gateway_does_not_stall_packaging(
    tmp_path: Path, aws: Aws
) -> None:
    # GIVEN the three things an interrupted rmtree of parts/<id>/ can leave
    spool, packager, _uploader, part = closed_part(tmp_path, aws)
    entry = packager.package(part)
    assert entry is not None
    zipped = spool.path(PARTS) / part.name  # its zip is in the outbox
    zipped.mkdir()
    (zipped / "1.2.3.dcm").write_bytes(b"shipped")
    unzipped = spool.path(PARTS) / "20260101T000000Z-0123456789abcdef0123456789abcdef"
    unzipped.mkdir()
    (unzipped / "1.2.4.dcm").write_bytes(b"never zipped")
    empty = spool.path(PARTS) / "20260101T000001Z-0123456789abcdef0123456789abcdef"
    empty.mkdir()
    # WHEN the packager goes through parts/
    results = {path.name: packager.package(path) for path in packager.pending()}
    # THEN the zipped one's leftover and the empty folder are removed, the outbox entry stays,
    # and instances that never reached a zip are kept in quarantine with a reason, not deleted
    assert results[part.name] is not None and results[part.name].part_id == part.name
    assert results[empty.name] is None
    assert list(spool.path(PARTS).iterdir()) == []
    [held] = spool.quarantined()
    assert held["from"] == PARTS and "ValueError" in held["reason"]
    assert (spool.quarantine_folder(held["id"]) / unzipped.name / "1.2.4.dcm").read_bytes() == b"never zipped"
