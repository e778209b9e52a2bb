"""C-STORE statuses on real associations: 0x0000 only once durably spooled, failures answered, bytes kept.

The gateway runs in this process on a free loopback port, uploading to in-process moto.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset

from edge_gateway.gateway import Gateway
from tests.conftest import Aws
from tests.e2e.conftest import wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.gateway_helpers import (  # noqa: F401 - start_gateway_fixture provides start_gateway
    GatewayFactory,
    bucket_members,
    dataset_bytes,
    echo,
    member_bytes,
    send_files,
    start_gateway_fixture,
    write_files,
)

pytestmark = pytest.mark.e2e

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC210
DATASET_MISMATCH = 0xA900


def spooled(gateway: Gateway) -> set[str]:
    root = gateway.spool.root
    return {p.stem for p in root.glob("series/*/*/*.dcm")} | {p.stem for p in root.glob("parts/*/*.dcm")}


def shipped_members(aws: Aws, count: int) -> dict[str, list[str]]:
    def probe() -> dict[str, list[str]] | None:
        found = bucket_members(aws.s3, aws.bucket)
        return found if sum(len(m) for m in found.values()) >= count else None

    return wait_for(probe, 30, f"{count} instances in the bucket")


def test_instances_are_stored_and_shipped_byte_for_byte_as_received(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a series in two transfer syntaxes (explicit little endian, and a compressed RLE file)
    files = write_files(tmp_path / "ct", series_from("CT_small.dcm", 3))
    files += write_files(tmp_path / "rle", series_from("MR_small_RLE.dcm", 1))
    gateway = start_gateway()

    # WHEN a real sender stores them, sending the files' dataset bytes unchanged
    result = send_files(gateway.port, files)

    # THEN each is acknowledged, and the zip member in S3 holds exactly the bytes that were sent
    assert result.statuses == [SUCCESS] * 4
    members = shipped_members(aws, 4)
    for path in files:
        sop = path.stem
        [key] = [k for k, sops in members.items() if sop in sops]
        stored = member_bytes(aws.s3, aws.bucket, key, sop)
        sent = dataset_bytes(path)
        assert stored.endswith(sent)
        # AND it is a valid DICOM file whose meta names the received transfer syntax
        stored_path = tmp_path / "stored.dcm"
        stored_path.write_bytes(stored)
        original = dcmread(path, stop_before_pixels=True)
        again = dcmread(stored_path, stop_before_pixels=True)
        assert again.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert again.SOPInstanceUID == sop
        assert len(stored) - len(sent) < 400  # only the file meta was added


def test_spool_limit_reached_answers_out_of_resources_and_keeps_nothing(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a spool limit that fits two instances of ~40 KB, and a series closed only after 60 s
    files = write_files(tmp_path / "ct", series_from("CT_small.dcm", 4))
    size = files[0].stat().st_size
    gateway = start_gateway(max_spool_bytes=int(size * 2.5), stable_after=60.0)

    # WHEN four instances are sent
    result = send_files(gateway.port, files)

    # THEN the first two are acknowledged, the others get 0xA700 (the PACS retries), nothing silent
    assert result.statuses == [SUCCESS, SUCCESS, OUT_OF_RESOURCES, OUT_OF_RESOURCES]
    assert spooled(gateway) == {files[0].stem, files[1].stem}
    assert gateway.spool.used_bytes <= int(size * 2.5)


def test_unwritable_spool_answers_out_of_resources_then_recovers(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a gateway whose spool tmp/ folder has become unusable (replaced by a file:
    # root ignores permission bits, a file in the way fails for every user)
    files = write_files(tmp_path / "ct", series_from("CT_small.dcm", 2))
    gateway = start_gateway()
    tmp_dir = gateway.spool.path("tmp")
    # Moved away in one step: the coordinator keeps writing its status file through tmp/.
    os.rename(tmp_dir, tmp_path / "old-spool-tmp")
    tmp_dir.write_text("in the way")

    # WHEN an instance is sent
    refused = send_files(gateway.port, files[:1])

    # THEN it is refused with 0xA700 and nothing of it is spooled
    assert refused.statuses == [OUT_OF_RESOURCES]
    assert spooled(gateway) == set()

    # AND once the disk is fixed the PACS's retry succeeds and reaches S3
    tmp_dir.unlink()
    tmp_dir.mkdir()
    assert send_files(gateway.port, files).statuses == [SUCCESS, SUCCESS]
    assert sorted(sop for sops in shipped_members(aws, 2).values() for sop in sops) == sorted(
        p.stem for p in files
    )


def test_failing_fsync_is_never_acknowledged(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a disk whose fsync fails (an I/O error): the data may not be on the platter
    files = write_files(tmp_path / "ct", series_from("CT_small.dcm", 1))
    gateway = start_gateway()

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)

    # WHEN an instance is sent
    result = send_files(gateway.port, files)
    monkeypatch.undo()

    # THEN the sender gets 0xA700, not success, and the instance is not in any series
    assert result.statuses == [OUT_OF_RESOURCES]
    assert spooled(gateway) == set()
    # Nothing of it left in tmp/. The gateway's periodic status write passes through tmp/ for
    # a moment (and unlinks its file when fsync fails): a leftover is one that stays.
    tmp = gateway.spool.path("tmp")
    wait_for(lambda: not any(tmp.iterdir()), 20, "tmp/ to hold no file of the refused instance")


def _with_dataset(path: Path, target: Path, dataset: bytes) -> Path:
    """``path``'s preamble and file meta followed by other dataset bytes."""
    data = path.read_bytes()
    target.write_bytes(data[: len(data) - len(dataset_bytes(path))] + dataset)
    return target


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the deliberately bad UID
def test_undecodable_datasets_answer_cannot_understand(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path
) -> None:
    # GIVEN a dataset of garbage bytes, one without a Series, one without a Study Instance UID,
    # one whose UID cannot name a file, and a good one
    [good] = write_files(tmp_path / "good", series_from("CT_small.dcm", 1))
    garbage = _with_dataset(good, tmp_path / "garbage.dcm", b"\xff\xfe\x00\x10" * 64)
    no_series = series_from("CT_small.dcm", 1)[0]
    del no_series.SeriesInstanceUID
    [no_series_file] = write_files(tmp_path / "noseries", [no_series])
    no_study = series_from("CT_small.dcm", 1)[0]
    del no_study.StudyInstanceUID
    [no_study_file] = write_files(tmp_path / "nostudy", [no_study])
    bad_uid = series_from("CT_small.dcm", 1)[0]
    bad_uid.StudyInstanceUID = "1.2/../../etc"
    [bad_uid_file] = write_files(tmp_path / "baduid", [bad_uid])
    gateway = start_gateway()

    # WHEN all five are sent on one association
    result = send_files(gateway.port, [garbage, no_series_file, no_study_file, bad_uid_file, good])

    # THEN the unreadable three are refused with 0xC210, the UID that breaks the UID rule with
    # 0xA900 (read, but no valid IOD), each refusal with its reason and no value in it, the
    # association survives, the good one is kept
    assert result.statuses == [CANNOT_UNDERSTAND] * 3 + [DATASET_MISMATCH, SUCCESS]
    assert all(result.comments[:4])
    assert result.comments[1:3] == ["dataset lacks Study, Series or SOP Instance UID"] * 2
    assert "etc" not in result.comments[3]
    assert result.comments[4] == ""
    shipped = {sop for sops in shipped_members(aws, 1).values() for sop in sops}
    assert spooled(gateway) | shipped == {good.stem}


def test_disallowed_calling_ae_title_is_rejected_at_association(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    files = write_files(tmp_path / "ct", series_from("CT_small.dcm", 1))
    gateway = start_gateway(allowed_calling_aets=("PACS", "PACS2"))
    assert send_files(gateway.port, files, calling="INTRUDER").established is False
    assert echo(gateway.port, calling="INTRUDER") is None
    assert echo(gateway.port, calling="PACS2") == SUCCESS
    assert spooled(gateway) == set()


def test_peer_outside_allowed_networks_is_refused(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    refused = start_gateway(allowed_peer_networks=("10.0.0.0/8",), spool_dir=tmp_path / "a")
    allowed = start_gateway(allowed_peer_networks=("10.0.0.0/8", "127.0.0.0/8"), spool_dir=tmp_path / "b")
    assert echo(refused.port) is None
    assert echo(allowed.port) == SUCCESS


def test_file_meta_helper_is_consistent(tmp_path: Path) -> None:
    # The byte comparison above relies on dataset_bytes(); check it against pydicom.
    [path] = write_files(tmp_path, series_from("CT_small.dcm", 1))
    ds = dcmread(path)
    assert isinstance(ds.file_meta, FileMetaDataset)
    raw = dataset_bytes(path)
    assert raw.startswith(b"\x08\x00")  # group 0008 comes first after the meta
    assert len(raw) < path.stat().st_size


def _with_command_uid(source: Path, target: Path, sop_instance_uid: str) -> Path:
    """``source`` with another Media Storage SOP Instance UID: what send_c_store puts in the
    command's Affected SOP Instance UID (the data set is unchanged)."""
    ds = dcmread(source)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.save_as(target, enforce_file_format=False)
    return target


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the deliberately bad UIDs
def test_odd_commands_get_failure_statuses_not_an_abort(
    start_gateway: GatewayFactory, aws: Aws, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a C-STORE whose command carries a 65-character Affected SOP Instance UID (lenient
    # modalities send them), one whose command names another instance than its data set, one
    # whose data set's SOP Instance UID has 65 characters, and a good one
    good, long_command, other, long_dataset = write_files(tmp_path / "s", series_from("CT_small.dcm", 4))
    too_long = "1.2.826.0.1.3680043.8.498." + "1" * 39
    assert len(too_long) == 65
    long_command = _with_command_uid(long_command, tmp_path / "long-command.dcm", too_long)
    other = _with_command_uid(other, tmp_path / "other.dcm", "1.2.3.4.5.6")
    ds = dcmread(long_dataset)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = too_long
    ds.save_as(tmp_path / "long-dataset.dcm", enforce_file_format=False)
    gateway = start_gateway()

    # WHEN they are sent on one association
    result = send_files(gateway.port, [long_command, other, tmp_path / "long-dataset.dcm", good])

    # THEN each odd one gets a failure status (no abort), the good one is kept
    assert not result.lost
    assert result.statuses == [CANNOT_UNDERSTAND, DATASET_MISMATCH, CANNOT_UNDERSTAND, SUCCESS]
    shipped = {sop for sops in shipped_members(aws, 1).values() for sop in sops}
    assert spooled(gateway) | shipped == {good.stem}
    # ... and the log says why without the UIDs
    assert too_long not in caplog.text and "1.2.3.4.5.6" not in caplog.text
    assert "Affected SOP Instance UID: UID longer than 64 characters" in caplog.text
    assert "SOP Instance UID differs from the command's" in caplog.text
