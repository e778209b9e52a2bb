"""Identity at the edge: duplicates vs versions (SHA-256), UID-checked spool paths, quarantine."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from common.dataset_digest import dataset_sha256

from edge_gateway.assembler import Assembler
from edge_gateway.packager import MANIFEST_NAME, Packager
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import SHIPPED, Spool, Stored, UnsafeUid, read_counters
from edge_gateway.uploader import Uploader
from tests.helpers.dicom_factory import series_from

STABLE = 10.0
STUDY, SERIES = "1.2.840.1", "1.2.840.1.2"  # the stored data sets' own UIDs are not read here


class _ConfirmingS3:
    """Stands in for S3's answer only (the e2e tests upload to moto): keeps what was put."""

    # The uploader registers its create-only hook on the client's events (a no-op here).
    meta = SimpleNamespace(events=SimpleNamespace(register=lambda *_args, **_kwargs: None))

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def upload_file(self, filename: str, bucket: str, key: str, **_kwargs: object) -> None:
        self.objects[key] = Path(filename).read_bytes()


def make(tmp_path: Path) -> tuple[Spool, Assembler, Packager, Uploader, _ConfirmingS3]:
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    assembler = Assembler(spool, STABLE, 1000, 10**9)
    shipped = ShippedRecord(spool.path(SHIPPED), retention_seconds=3600)
    s3 = _ConfirmingS3()
    uploader = Uploader(s3, "bucket", spool, shipped)  # type: ignore[arg-type]
    return spool, assembler, Packager(spool, shipped, "gw-test"), uploader, s3


def close_all(spool: Spool, assembler: Assembler) -> list[Path]:
    later = max(s.last_change() for s in spool.open_series()) + STABLE
    return assembler.close_ready(now=later)


def ship(
    spool: Spool, assembler: Assembler, packager: Packager, uploader: Uploader
) -> list[dict[str, bytes]]:
    """Close, zip and upload everything; the members (SOP UID -> bytes) of each part shipped."""
    close_all(spool, assembler)
    shipped: list[dict[str, bytes]] = []
    for part in packager.pending():
        entry = packager.package(part)
        if entry is None:
            continue
        with zipfile.ZipFile(entry.zip_path) as zf:
            shipped.append({n[: -len(".dcm")]: zf.read(n) for n in zf.namelist() if n != MANIFEST_NAME})
        assert uploader.upload(entry)
    return shipped


# --- versions -----------------------------------------------------------------------------


def test_a_correction_after_the_series_was_shipped_is_shipped_and_an_identical_resend_is_not(
    tmp_path: Path,
) -> None:
    # GIVEN a series shipped with 1.2.840.1.2.1 (PatientName wrong)
    spool, assembler, packager, uploader, _ = make(tmp_path)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"name=Wrong")
    spool.store(STUDY, SERIES, f"{SERIES}.2", b"second")
    assert ship(spool, assembler, packager, uploader) == [
        {f"{SERIES}.1": b"name=Wrong", f"{SERIES}.2": b"second"}
    ]

    # WHEN the PACS re-sends the second instance unchanged, and the first with the name corrected
    assert spool.store(STUDY, SERIES, f"{SERIES}.2", b"second") is Stored.NEW  # a new open series
    assert spool.store(STUDY, SERIES, f"{SERIES}.1", b"name=Right") is Stored.NEW

    # THEN only the corrected bytes are shipped, in a new part, and both outcomes are counted
    assert ship(spool, assembler, packager, uploader) == [{f"{SERIES}.1": b"name=Right"}]
    assert read_counters(spool.root) == {"duplicates_dropped": 1, "versions_shipped": 1}

    # AND the shipped record's latest version is the correction: sent again, it is dropped
    versions = ShippedRecord(spool.path(SHIPPED), 3600).versions(SERIES)
    assert versions[f"{SERIES}.1"].sha256 == hashlib.sha256(b"name=Right").hexdigest()
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"name=Right")
    assert ship(spool, assembler, packager, uploader) == []


def test_an_earlier_version_sent_again_after_a_correction_is_shipped_as_the_latest(tmp_path: Path) -> None:
    # GIVEN v1 shipped, then v2 (a correction) shipped
    spool, assembler, packager, uploader, _ = make(tmp_path)
    for version in (b"name=Wrong", b"name=Right"):
        spool.store(STUDY, SERIES, f"{SERIES}.1", version)
        assert ship(spool, assembler, packager, uploader) == [{f"{SERIES}.1": version}]

    # WHEN the PACS sends v1 again (the correction undone)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"name=Wrong")

    # THEN v1 ships again (the cloud's "latest received wins" makes it current), counted as a version
    assert ship(spool, assembler, packager, uploader) == [{f"{SERIES}.1": b"name=Wrong"}]
    assert read_counters(spool.root) == {"versions_shipped": 2}
    latest = ShippedRecord(spool.path(SHIPPED), 3600).versions(SERIES)[f"{SERIES}.1"]
    assert latest.sha256 == hashlib.sha256(b"name=Wrong").hexdigest()
    # AND only a re-send of that latest version is a duplicate
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"name=Wrong")
    assert ship(spool, assembler, packager, uploader) == []
    assert read_counters(spool.root) == {"versions_shipped": 2, "duplicates_dropped": 1}


def test_the_latest_version_is_the_one_zipped_last_even_when_uploads_finish_out_of_order(
    tmp_path: Path,
) -> None:
    # GIVEN v1 and then v2 zipped, v2 uploaded before v1 (a retry after an outage)
    spool, assembler, packager, uploader, _ = make(tmp_path)
    entries = []
    for version in (b"v1", b"v2"):
        spool.store(STUDY, SERIES, f"{SERIES}.1", version)
        [part] = close_all(spool, assembler)
        entry = packager.package(part)
        assert entry is not None
        entries.append(entry)
    assert uploader.upload(entries[1]) and uploader.upload(entries[0])

    # THEN v2 is the latest: v1 sent again ships, v2 sent again does not
    latest = ShippedRecord(spool.path(SHIPPED), 3600).versions(SERIES)[f"{SERIES}.1"]
    assert latest.sha256 == hashlib.sha256(b"v2").hexdigest()
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"v2")
    assert ship(spool, assembler, packager, uploader) == []


def test_in_an_open_series_an_identical_copy_is_dropped_and_changed_bytes_replace_the_earlier(
    tmp_path: Path,
) -> None:
    spool, assembler, packager, uploader, _ = make(tmp_path)
    assert spool.store(STUDY, SERIES, f"{SERIES}.1", b"first") is Stored.NEW
    assert spool.store(STUDY, SERIES, f"{SERIES}.1", b"first") is Stored.DUPLICATE
    assert spool.store(STUDY, SERIES, f"{SERIES}.1", b"corrected") is Stored.REPLACED
    assert spool.store(STUDY, SERIES, f"{SERIES}.1", b"correcte!") is Stored.REPLACED  # same size
    assert ship(spool, assembler, packager, uploader) == [{f"{SERIES}.1": b"correcte!"}]
    assert read_counters(spool.root) == {"duplicates_dropped": 1, "versions_replaced": 2}
    assert spool.used_bytes == 0  # replaced and dropped copies are accounted for


def test_a_correction_while_the_first_part_waits_in_the_outbox_is_shipped(tmp_path: Path) -> None:
    # GIVEN a part zipped and waiting for S3 (an outage)
    spool, assembler, packager, uploader, s3 = make(tmp_path)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"v1")
    [first_part] = close_all(spool, assembler)
    first = packager.package(first_part)
    assert first is not None
    assert first.descriptor["instance_sha256"] == {f"{SERIES}.1": hashlib.sha256(b"v1").hexdigest()}

    # WHEN the same instance arrives again identical, then corrected, each time in a new part
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"v1")
    [identical] = close_all(spool, assembler)
    assert packager.package(identical) is None
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"v2")
    [corrected] = close_all(spool, assembler)
    second = packager.package(corrected)

    # THEN the correction is zipped, and after upload both versions are recorded as shipped
    assert second is not None
    assert second.descriptor["sop_instance_uids"] == [f"{SERIES}.1"]
    assert uploader.upload(first) and uploader.upload(second)
    assert len(s3.objects) == 2
    assert len(ShippedRecord(spool.path(SHIPPED), 3600).versions(SERIES)) == 1
    latest = ShippedRecord(spool.path(SHIPPED), 3600).versions(SERIES)[f"{SERIES}.1"]
    assert latest.sha256 == hashlib.sha256(b"v2").hexdigest()


def test_a_shipped_record_of_an_older_version_without_hashes_ships_a_resend(tmp_path: Path) -> None:
    # GIVEN a record line written by the gateway before it recorded hashes
    spool, assembler, packager, uploader, _ = make(tmp_path)
    (spool.path(SHIPPED) / f"{SERIES}.jsonl").write_text(json.dumps({"sop": f"{SERIES}.1", "at": 9e9}) + "\n")
    # WHEN the instance is re-sent, THEN it is shipped (the cloud keeps identical bytes once)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"bytes")
    assert ship(spool, assembler, packager, uploader) == [{f"{SERIES}.1": b"bytes"}]


# --- no spool path from an unchecked UID ----------------------------------------------------


@pytest.mark.parametrize(
    ("study", "series", "sop"),
    [
        ("..", SERIES, f"{SERIES}.1"),  # would write outside series/ (into the spool root)
        ("0", ".", f"{SERIES}.1"),  # would put a file where a series folder should be
        (STUDY, SERIES, ".."),
        (STUDY, "1.2/3", f"{SERIES}.1"),
        (STUDY, SERIES, "1.2\n3"),
        (STUDY, SERIES, "1." + "2" * 64),
        ("1.2.ab", SERIES, f"{SERIES}.1"),
    ],
)
def test_a_uid_that_fails_the_uid_rule_never_names_a_spool_path(
    tmp_path: Path, study: str, series: str, sop: str
) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeUid) as refused:
        spool.store(study, series, sop, b"dataset")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert spool.used_bytes == 0
    # the message names the UID and the rule broken, never the value
    assert str(refused.value).split(":")[0] in {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}
    assert "(PS3.5 9.1)" in str(refused.value) or "longer than 64" in str(refused.value)
    assert "ab" not in str(refused.value) and "222" not in str(refused.value)


def test_padding_is_stripped_before_the_uid_names_a_path(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    assert spool.store(f"{STUDY}\x00", f"{SERIES} ", f"{SERIES}.1", b"dataset") is Stored.NEW
    assert (spool.path("series") / STUDY / SERIES / f"{SERIES}.1.dcm").read_bytes() == b"dataset"


# --- quarantine -----------------------------------------------------------------------------


def test_a_file_where_a_series_folder_should_be_is_quarantined_and_other_series_still_ship(
    tmp_path: Path,
) -> None:
    # GIVEN a spool where an older gateway stored study "0", series "." (a file sits where a
    # series folder should be), a leftover whose name is no UID, and a good series
    spool, assembler, packager, uploader, s3 = make(tmp_path)
    (spool.path("series") / "0").mkdir()
    (spool.path("series") / "0" / f"{SERIES}.9.dcm").write_bytes(b"stray")
    (spool.path("series") / "not-a-uid").mkdir()
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"good")

    # WHEN the assembler runs, THEN the good series ships and the bad entries are quarantined
    assert ship(spool, assembler, packager, uploader) == [{f"{SERIES}.1": b"good"}]
    assert len(s3.objects) == 1
    reasons = sorted(q["reason"] for q in spool.quarantined())
    assert reasons == ["a file where a series folder should be", "study folder not named by a valid UID"]
    assert all(q["from"] == "series" for q in spool.quarantined())
    assert list(spool.open_series()) == []
    # AND the stray bytes are kept in quarantine, not deleted
    assert [p.read_bytes() for p in spool.path("quarantine").rglob("*.dcm")] == [b"stray"]


def test_a_part_that_cannot_be_zipped_is_quarantined_and_the_next_part_ships(tmp_path: Path) -> None:
    # GIVEN two closed parts, the first with a damaged part.json
    spool, assembler, packager, uploader, s3 = make(tmp_path)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"one")
    spool.store(STUDY, "1.2.840.1.3", "1.2.840.1.3.1", b"two")
    parts = close_all(spool, assembler)
    (parts[0] / "part.json").write_text("{torn")

    # WHEN the packager runs over both
    entries = [packager.package(p) for p in packager.pending()]

    # THEN the damaged one is quarantined with its reason and the other is zipped and uploads
    assert sum(e is not None for e in entries) == 1
    [quarantined] = spool.quarantined()
    assert quarantined["from"] == "parts"
    assert quarantined["reason"] == "part could not be zipped: unusable entry (JSONDecodeError)"
    assert all(uploader.upload(e) for e in entries if e is not None)
    assert len(s3.objects) == 1
    assert packager.pending() == []


def test_an_unreadable_outbox_descriptor_is_quarantined_with_its_zip(tmp_path: Path) -> None:
    spool, assembler, packager, _, _ = make(tmp_path)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"one")
    spool.store(STUDY, "1.2.840.1.3", "1.2.840.1.3.1", b"two")
    entries = [packager.package(p) for p in close_all(spool, assembler)]
    assert entries[0] is not None
    entries[0].zip_path.with_suffix(".json").write_text('{"part_id": "x"}')
    [left] = packager.outbox()
    assert entries[1] is not None and left.part_id == entries[1].part_id
    [quarantined] = spool.quarantined()
    assert quarantined["reason"] == "outbox entry unusable: unusable entry (KeyError)"
    assert {p.suffix for p in spool.path("quarantine").rglob("*.*") if p.name != "reason.json"} == {
        ".json",
        ".zip",
    }


def test_a_full_disk_is_not_a_reason_to_quarantine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool, assembler, packager, _, _ = make(tmp_path)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"one")
    [part] = close_all(spool, assembler)

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(packager, "_write_zip", disk_full)
    with pytest.raises(OSError):
        packager.package(part)
    assert spool.quarantined() == []
    assert part.exists()


# --- crash safety ---------------------------------------------------------------------------


def test_a_crash_while_zipping_a_correction_zips_it_again_and_counts_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a shipped instance, then its correction closed into a part
    spool, assembler, packager, uploader, s3 = make(tmp_path)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"v1")
    ship(spool, assembler, packager, uploader)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"v2")
    spool.store(STUDY, SERIES, f"{SERIES}.2", b"new")
    [part] = close_all(spool, assembler)

    # WHEN the process dies after the descriptor was written, before the zip was renamed
    real_rename = os.rename

    def die_at_zip_rename(src: object, dst: object, **kwargs: object) -> None:
        if str(dst).endswith(".zip"):
            raise SystemExit("killed")
        real_rename(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", die_at_zip_rename)
    with pytest.raises(SystemExit):
        packager.package(part)
    monkeypatch.setattr(os, "rename", real_rename)

    # THEN after the restart the part is zipped once with both members, uploaded, counted once
    spool.recover()
    restarted = Packager(spool, ShippedRecord(spool.path(SHIPPED), 3600), "gw-test")
    [entry] = [restarted.package(p) for p in restarted.pending()]
    assert entry is not None
    assert entry.descriptor["sop_instance_uids"] == [f"{SERIES}.1", f"{SERIES}.2"]
    assert uploader.upload(entry)
    assert len(s3.objects) == 2
    assert read_counters(spool.root) == {"versions_shipped": 1}
    assert restarted.outbox() == [] and restarted.pending() == []


def test_a_part_left_by_an_older_version_with_a_uid_the_rule_refuses_is_quarantined(tmp_path: Path) -> None:
    # GIVEN a part closed by a gateway that accepted letters in UIDs
    spool, assembler, packager, _, _ = make(tmp_path)
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"one")
    [part] = close_all(spool, assembler)
    (part / f"{SERIES}.1.dcm").rename(part / "1.2.abc.dcm")
    # WHEN it is packaged, THEN it is quarantined, the reason naming the rule and not the value
    assert packager.package(part) is None
    [quarantined] = spool.quarantined()
    assert quarantined["reason"] == (
        "part could not be zipped: SOPInstanceUID: UID is not dot-separated digits (PS3.5 9.1)"
    )


def test_the_same_data_set_under_other_file_meta_is_the_same_version(tmp_path: Path) -> None:
    # GIVEN an instance received and shipped (the gateway's file meta)
    spool, assembler, packager, uploader, _ = make(tmp_path)
    [ds] = series_from("CT_small.dcm", 1)
    sop = ds.SOPInstanceUID

    def part10(source_ae: str) -> bytes:
        ds.file_meta.SourceApplicationEntityTitle = source_ae
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    received, on_disk = part10("GATEWAY"), part10("ARCHIVE_DISK")
    assert received != on_disk
    spool.store(STUDY, SERIES, sop, received)
    assert ship(spool, assembler, packager, uploader) == [{sop: received}]
    latest = ShippedRecord(spool.path(SHIPPED), 3600).versions(SERIES)[sop]
    assert latest.dataset_sha256 == dataset_sha256(received) == dataset_sha256(on_disk)

    # WHEN the same data set comes again under other file meta (an import of the archive's copy)
    spool.store(STUDY, SERIES, sop, on_disk)

    # THEN it is no new version: dropped and counted
    assert ship(spool, assembler, packager, uploader) == []
    assert read_counters(spool.root) == {"duplicates_dropped": 1}
