"""Series grouping on the spool: quiet period, late instances, limits, concurrency, packaging."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from pathlib import Path

from edge_gateway.assembler import Assembler
from edge_gateway.packager import MANIFEST_NAME, Packager
from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import SHIPPED, Spool

STABLE = 10.0


def make(tmp_path: Path, max_instances: int = 1000) -> tuple[Spool, Assembler, Packager]:
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    assembler = Assembler(spool, STABLE, max_instances, 10**9)
    shipped = ShippedRecord(spool.path(SHIPPED), retention_seconds=3600)
    return spool, assembler, Packager(spool, shipped, "gw-test")


def store(spool: Spool, assembler: Assembler, study: str, series: str, sop: str) -> bool:
    data = f"dicom bytes of {sop}".encode()
    stored = spool.store(study, series, sop, data)
    if stored:
        assembler.stored(study, series, len(data))
    return stored


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members(part: Path) -> set[str]:
    return {p.stem for p in part.glob("*.dcm")}


def test_interleaved_series_from_concurrent_associations_become_one_part_each(tmp_path: Path) -> None:
    # GIVEN two series whose instances arrive interleaved over four concurrent associations
    spool, assembler, _ = make(tmp_path)
    expected = {"1.2.3": {f"1.2.3.{i}" for i in range(40)}, "1.2.4": {f"1.2.4.{i}" for i in range(40)}}
    work = [(series, sop) for series, sops in expected.items() for sop in sorted(sops)]

    def sender(share: list[tuple[str, str]]) -> None:
        for series, sop in share:
            assert store(spool, assembler, "1.2", series, sop)

    threads = [threading.Thread(target=sender, args=(work[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # WHEN the quiet period has passed
    parts = assembler.close_ready(now=_later(spool))

    # THEN each series is exactly one part holding all of its instances
    assert len(parts) == 2
    by_series = {json.loads((p / "part.json").read_text())["series_uid"]: members(p) for p in parts}
    assert by_series == expected
    assert list(spool.open_series()) == []


def test_series_stays_open_during_the_quiet_period(tmp_path: Path) -> None:
    spool, assembler, _ = make(tmp_path)
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.1")
    series = next(spool.open_series())
    assert assembler.close_ready(now=series.last_change() + STABLE - 1) == []
    assert len(assembler.close_ready(now=series.last_change() + STABLE)) == 1


def test_instance_after_close_starts_a_new_part_of_the_same_series(tmp_path: Path) -> None:
    spool, assembler, _ = make(tmp_path)
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.1")
    [first] = assembler.close_ready(now=_later(spool))
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.2")
    [second] = assembler.close_ready(now=_later(spool))
    assert first != second
    assert members(first) == {"1.2.3.1"}
    assert members(second) == {"1.2.3.2"}


def test_count_limit_closes_a_series_before_it_is_quiet(tmp_path: Path) -> None:
    spool, assembler, _ = make(tmp_path, max_instances=3)
    for i in range(3):
        store(spool, assembler, "1.2", "1.2.3", f"1.2.3.{i}")
    series = next(spool.open_series())
    [part] = assembler.close_ready(now=series.last_change())
    assert len(members(part)) == 3


def test_identical_copy_in_an_open_series_is_kept_once(tmp_path: Path) -> None:
    spool, assembler, _ = make(tmp_path)
    assert store(spool, assembler, "1.2", "1.2.3", "1.2.3.1")
    assert not store(spool, assembler, "1.2", "1.2.3", "1.2.3.1")
    [part] = assembler.close_ready(now=_later(spool))
    assert (part / "1.2.3.1.dcm").read_bytes() == b"dicom bytes of 1.2.3.1"


def test_packaged_part_is_a_zip_with_members_and_manifest(tmp_path: Path) -> None:
    spool, assembler, packager = make(tmp_path)
    for i in range(3):
        store(spool, assembler, "1.2", "1.2.3", f"1.2.3.{i}")
    [part] = assembler.close_ready(now=_later(spool))
    entry = packager.package(part)
    assert entry is not None
    assert not part.exists()
    with zipfile.ZipFile(entry.zip_path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST_NAME))
        assert all(
            info.compress_type == zipfile.ZIP_STORED
            for info in zf.infolist()
            if info.filename != MANIFEST_NAME
        )
    assert names == {"1.2.3.0.dcm", "1.2.3.1.dcm", "1.2.3.2.dcm", MANIFEST_NAME}
    assert manifest["series_instance_uid"] == "1.2.3"
    assert manifest["instance_count"] == 3
    assert entry.object_key == f"incoming/1.2/1.2.3/{entry.part_id}.zip"


def test_instances_already_shipped_are_not_shipped_again(tmp_path: Path) -> None:
    spool, assembler, packager = make(tmp_path)
    ShippedRecord(spool.path(SHIPPED), 3600).add("1.2.3", {"1.2.3.1": sha256(b"dicom bytes of 1.2.3.1")})
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.1")
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.2")
    [part] = assembler.close_ready(now=_later(spool))
    entry = packager.package(part)
    assert entry is not None
    assert entry.descriptor["sop_instance_uids"] == ["1.2.3.2"]


def _later(spool: Spool) -> float:
    return max(s.last_change() for s in spool.open_series()) + STABLE


def test_instances_waiting_in_the_outbox_are_not_zipped_again(tmp_path: Path) -> None:
    # GIVEN a part zipped and waiting for S3 (an outage), holding 1.2.3.1
    spool, assembler, packager = make(tmp_path)
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.1")
    [first_part] = assembler.close_ready(now=_later(spool))
    assert packager.package(first_part) is not None

    # WHEN the PACS re-sends 1.2.3.1 with a new 1.2.3.2, and that part closes too
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.1")
    store(spool, assembler, "1.2", "1.2.3", "1.2.3.2")
    [second_part] = assembler.close_ready(now=_later(spool))
    second = packager.package(second_part)

    # THEN the second part ships only the new instance
    assert second is not None
    assert second.descriptor["sop_instance_uids"] == ["1.2.3.2"]
