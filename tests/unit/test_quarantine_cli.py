"""``edge-gateway quarantine list | requeue ID | remove ID`` through the real CLI (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_gateway.spool import OUTBOX, PARTS, REASON_FILE, SERIES, Spool
from tests.helpers.dicom_factory import series_from, write_series
from tests.unit.test_spool_identity import STUDY, close_all, make


def cli(spool: Spool, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_gateway", "quarantine", *args, "--spool-dir", str(spool.root)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=spool.root.parent,
        check=False,
    )


def entry_id(spool: Spool, reason_start: str) -> str:
    return next(str(q["id"]) for q in spool.quarantined() if str(q["reason"]).startswith(reason_start))


def test_list_requeue_and_remove_quarantined_entries(tmp_path: Path) -> None:
    # GIVEN a spool with three quarantined entries, as the gateway leaves them: a study folder
    # whose name is no UID, a part with a torn part.json, an outbox entry whose descriptor lost
    # a field the upload needs
    spool, assembler, packager, uploader, s3 = make(tmp_path)
    (spool.path(SERIES) / "not-a-uid").mkdir()
    (spool.path(SERIES) / "not-a-uid" / "x.dcm").write_bytes(b"stray")
    spool.store(STUDY, "1.2.840.1.3", "1.2.840.1.3.1", b"part")
    spool.store(STUDY, "1.2.840.1.4", "1.2.840.1.4.1", b"outbox")
    torn_part, zipped = close_all(spool, assembler)  # the odd study folder is quarantined here
    entry = packager.package(zipped)
    assert entry is not None
    part_json = json.loads((torn_part / "part.json").read_text())
    (torn_part / "part.json").write_text("{torn")
    assert packager.package(torn_part) is None
    descriptor = json.loads(entry.zip_path.with_suffix(".json").read_text())
    damaged = {k: v for k, v in descriptor.items() if k != "manifest_sha256"}
    entry.zip_path.with_suffix(".json").write_text(json.dumps(damaged))
    assert packager.outbox() == []
    study_id = entry_id(spool, "study folder not named")
    part_id = entry_id(spool, "part could not be zipped")
    outbox_id = entry_id(spool, "outbox entry unusable")

    # WHEN an operator lists them, THEN each shows with where it came from and why (no UID)
    listed = cli(spool, "list")
    assert listed.returncode == 0, listed.stderr
    for qid, origin in ((study_id, "series"), (part_id, "parts"), (outbox_id, "outbox")):
        [line] = [ln for ln in listed.stdout.splitlines() if ln.startswith(qid)]
        assert f"from {origin}/: " in line
    assert "1.2.840" not in listed.stdout
    as_json = json.loads(cli(spool, "list", "--json").stdout)
    assert sorted(q["id"] for q in as_json) == sorted([study_id, part_id, outbox_id])

    # WHEN they are re-queued as they are, THEN each is refused with what still cannot be served
    refused = {qid: cli(spool, "requeue", qid) for qid in (study_id, part_id, outbox_id)}
    assert all(r.returncode == 1 for r in refused.values())
    assert "study folder name (StudyInstanceUID): " in refused[study_id].stderr
    assert "cannot be served: remove it" in refused[study_id].stderr
    assert "its part.json is unusable (JSONDecodeError)" in refused[part_id].stderr
    assert "its outbox descriptor lacks manifest_sha256" in refused[outbox_id].stderr
    assert len(spool.quarantined()) == 3  # nothing moved

    # WHEN the operator repairs two of them in quarantine/ and re-queues them
    quarantine = spool.path("quarantine")
    (quarantine / part_id / torn_part.name / "part.json").write_text(json.dumps(part_json))
    (quarantine / outbox_id / f"{entry.part_id}.json").write_text(json.dumps(descriptor))
    requeued = [cli(spool, "requeue", qid) for qid in (part_id, outbox_id)]

    # THEN they are back where they came from, and the gateway zips and ships them
    assert [r.returncode for r in requeued] == [0, 0], [r.stderr for r in requeued]
    assert f"re-queued {part_id} to parts/" in requeued[0].stdout
    assert f"re-queued {outbox_id} to outbox/" in requeued[1].stdout
    assert [p.name for p in packager.pending()] == [torn_part.name]
    rezipped = packager.package(packager.pending()[0])
    assert rezipped is not None
    assert sorted(e.part_id for e in packager.outbox()) == sorted([entry.part_id, rezipped.part_id])
    assert all(uploader.upload(e) for e in packager.outbox())
    assert len(s3.objects) == 2
    assert [q["id"] for q in spool.quarantined()] == [study_id]

    # WHEN the operator removes the last one: declined at the prompt, then confirmed with --yes
    declined = cli(spool, "remove", study_id, stdin="n\n")
    assert declined.returncode == 1 and "not removed" in declined.stdout
    assert (quarantine / study_id).exists()
    removed = cli(spool, "remove", study_id, "--yes")
    # THEN it is gone, and the log line names the id and size, never a UID or PHI
    assert removed.returncode == 0, removed.stderr
    assert f"removed {study_id}" in removed.stdout
    assert study_id in removed.stderr and "not-a-uid" not in removed.stderr
    assert not (quarantine / study_id).exists()
    assert cli(spool, "list").stdout.strip() == "quarantine is empty"
    # AND an unknown id or a path is refused as such
    for bad in ("20260101T000000Z-deadbeef", "../series"):
        unknown = cli(spool, "remove", bad, "--yes")
        assert unknown.returncode == 2 and "no quarantine entry" in unknown.stderr
    assert spool.path(SERIES).exists() and spool.path(PARTS).exists() and spool.path(OUTBOX).exists()


def test_requeue_of_a_series_quarantined_by_an_older_version_finds_its_study(tmp_path: Path) -> None:
    # GIVEN a series folder quarantined by a gateway that did not record where it was
    spool, *_ = make(tmp_path)
    instances = series_from("CT_small.dcm", 2)
    study, series = instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID
    folder = spool.path(SERIES) / study / series
    write_series(folder, instances)
    quarantined = spool.quarantine([folder], "series could not be closed: unreadable entry (OSError, EIO)")
    info = json.loads((quarantined / REASON_FILE).read_text())
    (quarantined / REASON_FILE).write_text(json.dumps({k: v for k, v in info.items() if k != "paths"}))
    # WHEN it is re-queued
    result = cli(spool, "requeue", quarantined.name)
    # THEN it is an open series again, under the study its instances name
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in instances)
    assert spool.quarantined() == []
    assert [(s.study_uid, s.series_uid) for s in spool.open_series()] == [(study, series)]
