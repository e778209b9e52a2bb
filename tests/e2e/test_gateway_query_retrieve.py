"""C-FIND, C-MOVE and C-GET against the gateway, answered from the local stand-in's index and bucket.

Data goes in the ordinary way (C-STORE to the stand-in's gateway, zip, ingest); a
second gateway with query/retrieve configured answers dcmtk ``findscu``,
``movescu`` (to dcmtk ``storescp``) and ``getscu``, and pynetdicom for C-CANCEL.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from edge_gateway.archive_client import Archive
from edge_gateway.config import load
from edge_gateway.gateway import Gateway, dimse_status
from local_cloud.stack import LocalCloudConfig, free_port
from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dcmtk import dcmtk, store_with_dcmtk
from tests.helpers.dicom_factory import series_from, write_series

pytestmark = pytest.mark.e2e

SITE = LocalCloudConfig().gateway_id


@dataclass
class Archived:
    ct: list[Dataset]
    mr: list[Dataset]


@pytest.fixture(scope="module")
def archived(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Archived:
    """Two studies of two patients, stored through the stand-in's gateway and indexed."""
    ct = series_from("CT_small.dcm", 3)
    mr = series_from("MR_small.dcm", 2)
    for ds in ct:
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.AccessionNumber = (
            "Qrfind^Alpha",
            "QR-1",
            "20240105",
            "ACC-Q1",
        )
    for ds in mr:
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName, ds.PatientID, ds.StudyDate = "Qrfind^Müller", "QR-2", "20230601"
    store_with_dcmtk(stack.dicom_port, write_series(tmp_path_factory.mktemp("archived"), [*ct, *mr]))
    for series in (ct, mr):
        uid = series[0].StudyInstanceUID

        def indexed(uid: str = uid, count: int = len(series)) -> bool:
            status, _, body = stack.get(f"/dicomweb/studies?StudyInstanceUID={uid}")
            return status == 200 and body[0]["00201208"]["Value"][0] == count

        wait_for(indexed, 90, "the studies to be indexed")
    return Archived(ct, mr)


def start_gateway(stack: Stack, spool: Path, **settings: Any) -> Gateway:
    config = load(
        overrides={
            "host": "127.0.0.1",
            "port": 0,
            "ae_title": "QREDGE",
            "spool_dir": spool,
            "bucket": stack.bucket,
            "region": "us-east-1",
            "endpoint_url": stack.moto,
            "gateway_id": "qr-edge",
            "table_name": LocalCloudConfig().table,
            "query_sites": (SITE,),
            **settings,
        },
        environ={},
    )
    with pytest.MonkeyPatch.context() as env:  # the clients keep the credentials they start with
        env.setenv("AWS_ACCESS_KEY_ID", "local")
        env.setenv("AWS_SECRET_ACCESS_KEY", "local")
        gateway = Gateway(config)
        gateway.start()
    return gateway


@pytest.fixture(scope="module")
def destination_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def qr_gateway(
    stack: Stack, archived: Archived, destination_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gateway = start_gateway(
        stack,
        tmp_path_factory.mktemp("qr-spool"),
        known_aets=(f"STORESCP=127.0.0.1:{destination_port}",),
        dimse_permissions=("WS1: find get move=STORESCP", "NOQUERY: get"),
    )
    yield gateway
    gateway.stop()


def findscu(port: int, out: Path, model: str, *keys: str, calling: str = "WS1") -> list[Dataset]:
    """Run dcmtk findscu with -X; the responses' identifiers, read back from the files it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    command = [dcmtk("findscu"), model, "-aet", calling, "-aec", "QREDGE", "-X", "-od", str(out)]
    for key in keys:
        command += ["-k", key]
    result = subprocess.run(
        [*command, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_findscu_study_level_by_patient_id(qr_gateway: Gateway, archived: Archived, tmp_path: Path) -> None:
    # WHEN a Study Root STUDY-level query names a patient ID and asks for common return keys
    found = findscu(
        qr_gateway.port,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientID=QR-1",
        "PatientName",
        "StudyDate",
        "StudyInstanceUID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    )
    # THEN exactly that study comes back with its values
    assert [str(ds.StudyInstanceUID) for ds in found] == [archived.ct[0].StudyInstanceUID]
    [study] = found
    assert str(study.PatientName) == "Qrfind^Alpha"
    assert study.StudyDate == "20240105"
    assert study.AccessionNumber == "ACC-Q1"
    assert int(study.NumberOfStudyRelatedInstances) == 3
    assert list(study.ModalitiesInStudy) == ["CT"] or study.ModalitiesInStudy == "CT"
    assert study.RetrieveAETitle == "QREDGE"


def test_findscu_wildcards_and_date_ranges(qr_gateway: Gateway, archived: Archived, tmp_path: Path) -> None:
    both = findscu(
        qr_gateway.port, tmp_path / "a", "-S", "QueryRetrieveLevel=STUDY", "PatientName=QRFIND*", "StudyDate"
    )
    assert sorted(str(ds.StudyInstanceUID) for ds in both) == sorted(
        [archived.ct[0].StudyInstanceUID, archived.mr[0].StudyInstanceUID]
    )
    in_2024 = findscu(
        qr_gateway.port,
        tmp_path / "b",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientName=Qrfind*",
        "StudyDate=20240101-20241231",
    )
    assert [str(ds.StudyInstanceUID) for ds in in_2024] == [archived.ct[0].StudyInstanceUID]
    before = findscu(
        qr_gateway.port,
        tmp_path / "c",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientID=QR-?",
        "StudyDate=-20231231",
    )
    assert [str(ds.StudyInstanceUID) for ds in before] == [archived.mr[0].StudyInstanceUID]


def test_findscu_patient_root_patient_level_keeps_characters(
    qr_gateway: Gateway, archived: Archived, tmp_path: Path
) -> None:
    found = findscu(
        qr_gateway.port,
        tmp_path,
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientID=QR-2",
        "PatientName",
        "NumberOfPatientRelatedStudies",
    )
    [patient] = found
    assert str(patient.PatientName) == "Qrfind^Müller"
    assert int(patient.NumberOfPatientRelatedStudies) == 1


def test_findscu_series_and_image_levels(qr_gateway: Gateway, archived: Archived, tmp_path: Path) -> None:
    study_uid = archived.ct[0].StudyInstanceUID
    series = findscu(
        qr_gateway.port,
        tmp_path / "series",
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study_uid}",
        "SeriesInstanceUID",
        "Modality=CT",
        "NumberOfSeriesRelatedInstances",
    )
    assert [str(ds.SeriesInstanceUID) for ds in series] == [archived.ct[0].SeriesInstanceUID]
    assert int(series[0].NumberOfSeriesRelatedInstances) == 3
    images = findscu(
        qr_gateway.port,
        tmp_path / "images",
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study_uid}",
        f"SeriesInstanceUID={archived.ct[0].SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber=2",
    )
    assert [str(ds.SOPInstanceUID) for ds in images] == [archived.ct[1].SOPInstanceUID]


def _find(port: int, identifier: Dataset, calling: str = "WS1", model: Any = None) -> list[tuple[int, Any]]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    model = model or StudyRootQueryRetrieveInformationModelFind
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="QREDGE")
    assert assoc.is_established
    try:
        return [(int(status.Status), ds) for status, ds in assoc.send_c_find(identifier, model)]
    finally:
        assoc.release()


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA", "ignore:Invalid value for VR TM")
def test_permissions_and_bad_identifiers_get_clear_statuses(qr_gateway: Gateway, archived: Archived) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "QR-1"
    # An AE title allowed only to retrieve may not query: 0x0124 (not authorised)
    assert [s for s, _ in _find(qr_gateway.port, query, calling="NOQUERY")] == [0x0124]
    # A level the model does not have: 0xA900
    query.QueryRetrieveLevel = "PATIENT"
    assert [s for s, _ in _find(qr_gateway.port, query)] == [0xA900]
    # A malformed date range: 0xA900, nothing leaks
    query.QueryRetrieveLevel = "STUDY"
    for date in ("2024-bad", "2024-01-01", "20241345", "20240101-20231301"):
        query.StudyDate = date
        assert [s for s, _ in _find(qr_gateway.port, query)] == [0xA900], date
    # Keys of the series level are checked before any match, not only when a series is compared
    del query.StudyDate
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = "1.2.3.999"  # no such study: nothing would ever be compared
    query.SeriesDate = "20240230"
    assert [s for s, _ in _find(qr_gateway.port, query)] == [0xA900]
    query.SeriesDate = ""
    query.SeriesTime = "2500"
    assert [s for s, _ in _find(qr_gateway.port, query)] == [0xA900]


def test_the_match_limit_ends_the_search_with_b001(stack: Stack, archived: Archived, tmp_path: Path) -> None:
    gateway = start_gateway(stack, tmp_path / "spool", max_find_matches=1)
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName = "Qrfind*"
        query.StudyInstanceUID = ""
        statuses = [s for s, _ in _find(gateway.port, query)]
    finally:
        gateway.stop()
    assert statuses == [0xFF00, 0xB001]


class SlowArchive(Archive):
    """The real archive, with a pause before each instance: a C-CANCEL arrives mid-search."""

    def instances(self, study_uid: str, series_uid: str | None = None) -> Iterator[Any]:
        for item in super().instances(study_uid, series_uid):
            time.sleep(0.4)
            yield item


def test_c_cancel_ends_a_find_with_fe00(
    stack: Stack, archived: Archived, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_gateway import dimse_services

    # GIVEN a gateway whose archive pauses between instances, so that the C-CANCEL arrives mid-search
    monkeypatch.setattr(dimse_services, "Archive", SlowArchive)
    gateway = start_gateway(stack, tmp_path / "spool")
    try:
        ae = AE(ae_title="WS1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title="QREDGE")
        assert assoc.is_established
        context_id = assoc.accepted_contexts[0].context_id
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = archived.ct[0].StudyInstanceUID
        query.SeriesInstanceUID = archived.ct[0].SeriesInstanceUID
        query.SOPInstanceUID = ""
        # WHEN the first match arrives, the peer sends C-CANCEL
        statuses = []
        for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=7):
            statuses.append(int(status.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(7, context_id)
        assoc.release()
    finally:
        gateway.stop()
    # THEN the search ends with Cancel before every match was sent
    assert statuses[0] == 0xFF00
    assert statuses[-1] == 0xFE00
    assert len(statuses) < 4


def test_patient_root_find_model_is_offered(qr_gateway: Gateway, archived: Archived) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "QR-1"
    query.PatientName = ""
    results = _find(qr_gateway.port, query, model=PatientRootQueryRetrieveInformationModelFind)
    assert [s for s, _ in results] == [0xFF00, 0x0000]
    assert str(results[0][1].PatientName) == "Qrfind^Alpha"


@contextmanager
def running_storescp(port: int, out: Path, *flags: str) -> Iterator[Path]:
    """dcmtk storescp as the move destination STORESCP, writing what it receives to a folder."""
    out.mkdir()
    log = out.parent / f"{out.name}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [dcmtk("storescp"), *flags, "-aet", "STORESCP", "-od", str(out), str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, 30, "storescp to listen")
        assert process.poll() is None, log.read_text()
        yield out
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def storescp(destination_port: int, tmp_path: Path) -> Iterator[Path]:
    with running_storescp(destination_port, tmp_path / "received") as out:
        yield out


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _same_instances(received: list[Path], originals: list[Dataset]) -> None:
    got = {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in received)}
    assert sorted(got) == sorted(str(ds.SOPInstanceUID) for ds in originals)
    for original in originals:
        copy = got[str(original.SOPInstanceUID)]
        assert copy.PixelData == original.PixelData
        assert copy.PatientID == original.PatientID


def movescu(
    port: int, *keys: str, calling: str = "WS1", destination: str = "STORESCP"
) -> subprocess.CompletedProcess[str]:
    """dcmtk movescu -v (Study Root) with the given keys, moving to ``destination``."""
    command = [dcmtk("movescu"), "-v", "-S", "-aet", calling, "-aec", "QREDGE", "-aem", destination]
    for key in keys:
        command += ["-k", key]
    return subprocess.run(
        [*command, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60, check=False
    )


def series_keys(instance: Dataset) -> tuple[str, ...]:
    """movescu/getscu keys naming the series of ``instance``."""
    return (
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={instance.StudyInstanceUID}",
        f"SeriesInstanceUID={instance.SeriesInstanceUID}",
    )


def test_movescu_series_to_storescp_then_again_from_the_cache(
    qr_gateway: Gateway, archived: Archived, storescp: Path
) -> None:
    # WHEN movescu asks for the CT series to be moved to STORESCP
    result = movescu(qr_gateway.port, *series_keys(archived.ct[0]))
    # THEN it succeeds and storescp holds the three instances, pixel data intact
    assert result.returncode == 0, result.stderr
    assert "Final Move Response (Success)" in result.stdout + result.stderr
    wait_for(lambda: len(list(storescp.iterdir())) == 3, 10, "storescp to write the files")
    _same_instances(sorted(storescp.iterdir()), archived.ct)
    before = wait_for(
        lambda: (status := dimse_status(qr_gateway.config.spool_dir)).get("move_instances") == 3 and status,
        10,
        "the counters of the first move",
    )

    # WHEN the same prior is moved again
    for path in storescp.iterdir():
        path.unlink()
    result = movescu(qr_gateway.port, *series_keys(archived.ct[0]))
    assert result.returncode == 0, result.stderr
    # THEN it comes from the edge box's disk cache, not from S3
    after = wait_for(
        lambda: (status := dimse_status(qr_gateway.config.spool_dir))["move_instances"] == 6 and status,
        10,
        "the counters of the second move",
    )
    assert after["retrieve_cache_hits"] - before["retrieve_cache_hits"] == 3
    assert after["retrieve_cache_misses"] == before["retrieve_cache_misses"]
    wait_for(lambda: len(list(storescp.iterdir())) == 3, 10, "storescp to write the files")
    _same_instances(sorted(storescp.iterdir()), archived.ct)


def test_getscu_study(qr_gateway: Gateway, archived: Archived, tmp_path: Path) -> None:
    out = tmp_path / "got"
    keys = ("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archived.mr[0].StudyInstanceUID}")
    result = getscu(qr_gateway.port, out, *keys)
    assert result.returncode == 0, result.stderr
    _same_instances(sorted(out.iterdir()), archived.mr)


def _move(port: int, identifier: Dataset, destination: str, calling: str = "WS1") -> list[tuple[int, Any]]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="QREDGE")
    assert assoc.is_established
    try:
        return [
            (int(status.Status), status, ds)
            for status, ds in assoc.send_c_move(
                identifier, destination, StudyRootQueryRetrieveInformationModelMove
            )
        ]
    finally:
        assoc.release()


def test_unknown_move_destination_is_a801_a_forbidden_one_0124(
    qr_gateway: Gateway, archived: Archived, storescp: Path
) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = archived.ct[0].StudyInstanceUID
    # An AE title the gateway does not know: Move Destination unknown
    assert [r[0] for r in _move(qr_gateway.port, query, "NOBODY")] == [0xA801]
    # NOQUERY may C-GET only: a known destination is refused for it as Not Authorized (PS3.7 C.5)
    [(status, answer, _)] = _move(qr_gateway.port, query, "STORESCP", calling="NOQUERY")
    assert status == 0x0124
    assert "may not move" in answer.ErrorComment

    # WHEN dcmtk movescu asks for the same as NOQUERY
    ct = archived.ct[0]
    refused = movescu(qr_gateway.port, *series_keys(ct), calling="NOQUERY")
    # THEN it is told 0x0124 and nothing reaches the destination
    # (dcmtk 3.6.7 knows 0x0124 as a general status only: "Unknown Status: 0x124")
    assert "Final Move Response (Unknown Status: 0x124)" in refused.stderr, refused.stderr
    assert list(storescp.iterdir()) == []
    unknown = movescu(qr_gateway.port, *series_keys(ct), destination="NOBODY")
    assert "Final Move Response (Refused: MoveDestinationUnknown)" in unknown.stderr, unknown.stderr


def test_a_refused_sub_operation_is_reported(stack: Stack, archived: Archived, tmp_path: Path) -> None:
    # GIVEN a destination (a real pynetdicom Storage SCP) that refuses one of the three instances
    refused_uid = archived.ct[1].SOPInstanceUID
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid == refused_uid:
            return 0xA700
        received.append(uid)
        return 0x0000

    scp = AE(ae_title="PICKY")
    scp.add_supported_context(archived.ct[0].SOPClassUID, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    port = server.server_address[1]
    gateway = start_gateway(stack, tmp_path / "spool", known_aets=(f"PICKY=127.0.0.1:{port}",))
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = archived.ct[0].StudyInstanceUID
        query.SeriesInstanceUID = archived.ct[0].SeriesInstanceUID
        results = _move(gateway.port, query, "PICKY")
    finally:
        gateway.stop()
        server.shutdown()
    # THEN pending responses count down, and the final Warning lists the refused instance
    statuses = [r[0] for r in results]
    assert statuses[:-1] == [0xFF00] * 3
    final_status, final, identifier = results[-1]
    assert final_status == 0xB000
    assert final.NumberOfCompletedSuboperations == 2
    assert final.NumberOfFailedSuboperations == 1
    assert (
        list(identifier.FailedSOPInstanceUIDList) == [refused_uid]
        or identifier.FailedSOPInstanceUIDList == refused_uid
    )
    assert sorted(received) == sorted(
        ds.SOPInstanceUID for ds in archived.ct if ds.SOPInstanceUID != refused_uid
    )


def test_compressed_instances_go_as_stored_converted_or_fail_with_a_reason(
    stack: Stack, qr_gateway: Gateway, destination_port: int, tmp_path: Path
) -> None:
    from pydicom.encaps import encapsulate

    from tests.helpers.gateway_helpers import write_files

    # GIVEN an RLE Lossless MR series in the archive, sent and stored as it was, and one more
    # RLE instance of it whose pixel data no decoder can read (an RLE header with no segment)
    series = series_from("MR_small_RLE.dcm", 3)
    for ds in series:
        ds.PatientID = "QR-RLE"
    *good, broken = series
    broken.PixelData = encapsulate([b"\x00" * 64])
    store_with_dcmtk(stack.dicom_port, write_files(tmp_path / "rle", series), "-xr")  # propose RLE
    study_uid, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID

    def indexed() -> bool:
        status, _, body = stack.get(f"/dicomweb/studies?StudyInstanceUID={study_uid}")
        return status == 200 and body[0]["00201208"]["Value"][0] == 3

    wait_for(indexed, 90, "the RLE series to be indexed")
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID, query.SeriesInstanceUID = study_uid, series_uid
    before = dimse_status(qr_gateway.config.spool_dir)

    # WHEN the destination is a dcmtk storescp that accepts Implicit VR Little Endian only (+xi)
    with running_storescp(destination_port, tmp_path / "plain", "+xi") as out:
        results = _move(qr_gateway.port, query, "STORESCP")
        wait_for(lambda: len(list(out.iterdir())) == 2, 10, "storescp to write the files")
        received = [dcmread(path) for path in out.iterdir()]
    # THEN the decodable instances arrive decompressed, pixels equal to pydicom's decoding of the
    # stored ones, and the broken one is a failed sub-operation listed by UID, its reason counted
    final_status, final, identifier = results[-1]
    assert final_status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert identifier.FailedSOPInstanceUIDList == broken.SOPInstanceUID
    for copy in received:
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        [original] = [ds for ds in good if ds.SOPInstanceUID == copy.SOPInstanceUID]
        assert (copy.pixel_array == original.pixel_array).all()
    after = dimse_status(qr_gateway.config.spool_dir)
    assert after.get("move_converted", 0) - before.get("move_converted", 0) == 2
    assert after.get("move_unsendable", 0) - before.get("move_unsendable", 0) == 1

    # WHEN it accepts every syntax (+xa)
    with running_storescp(destination_port, tmp_path / "any", "+xa") as out:
        results = _move(qr_gateway.port, query, "STORESCP")
        wait_for(lambda: len(list(out.iterdir())) == 3, 10, "storescp to write the files")
    # THEN all three arrive in RLE Lossless with the stored pixel bytes (the broken one too: sent
    # as stored, not decoded)
    assert results[-1][0] == 0x0000
    for path in out.iterdir():
        copy = dcmread(path)
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
        [original] = [ds for ds in series if ds.SOPInstanceUID == copy.SOPInstanceUID]
        assert copy.PixelData == original.PixelData


def test_no_patient_data_in_any_log_record(
    qr_gateway: Gateway, archived: Archived, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN every logger at DEBUG (pynetdicom included)
    caplog.set_level(logging.DEBUG)
    # WHEN a workstation queries by name and ID and retrieves the study
    findscu(
        qr_gateway.port, tmp_path / "f", "-S", "QueryRetrieveLevel=STUDY", "PatientName=Qrfind*", "PatientID"
    )
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = archived.mr[0].StudyInstanceUID
    query.PatientID = "QR-2"
    assert _move(qr_gateway.port, query, "NOBODY")[-1][0] == 0xA801
    # THEN no log record names the patients
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert text  # something was logged
    for phi in ("Qrfind", "Müller", "QR-1", "QR-2", "ACC-Q1"):
        assert phi not in text


def getscu(port: int, out: Path, *keys: str) -> subprocess.CompletedProcess[str]:
    """dcmtk getscu -v (Study Root) with the given keys, writing what it receives to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    command = [dcmtk("getscu"), "-v", "-S", "-aet", "WS1", "-aec", "QREDGE", "-od", str(out)]
    for key in keys:
        command += ["-k", key]
    return subprocess.run(
        [*command, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_wildcard_uid_in_a_retrieve_is_a900_with_no_sub_operation_counts(
    qr_gateway: Gateway, archived: Archived, tmp_path: Path
) -> None:
    # WHEN getscu asks for StudyInstanceUID=* (unique keys take no wildcards, PS3.4 C.4.3.2.1)
    result = getscu(qr_gateway.port, tmp_path / "got", "QueryRetrieveLevel=STUDY", "StudyInstanceUID=*")
    output = result.stdout + result.stderr
    # THEN one final 0xA900 with the reason, no failed sub-operation that never was, nothing
    # received, and the association is released cleanly (nothing arrives after the response)
    assert "Received C-GET Response (Error: DataSetDoesNotMatchSOPClass)" in output, output
    assert "Number of Failed Suboperations    : 0" in output, output  # dcmtk's 0 for "absent"
    assert "Release Failed" not in output and "P-Data PDU arrived" not in output, output
    assert result.returncode == 0, output
    assert list((tmp_path / "got").iterdir()) == []
    # AND the same for C-MOVE: no association is made with the destination
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.*"
    [(status, answer, identifier)] = _move(qr_gateway.port, query, "STORESCP")
    assert status == 0xA900
    assert "no wildcards" in answer.ErrorComment
    assert "NumberOfFailedSuboperations" not in answer and not identifier


SITE_B = "qr-site-b"


@pytest.fixture(scope="module")
def two_sites(
    stack: Stack, archived: Archived, destination_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway of site B answering for both sites, site B holding the CT study of site A under
    the same UIDs but another patient (a UID collision, or a copy made elsewhere)."""
    gateway = start_gateway(
        stack,
        tmp_path_factory.mktemp("site-b-spool"),
        gateway_id=SITE_B,
        query_sites=(SITE, SITE_B),
        stable_after=1.0,
        known_aets=(f"STORESCP=127.0.0.1:{destination_port}",),
        dimse_permissions=("WS1: find get move=STORESCP",),
    )
    try:
        copies = series_from("CT_small.dcm", 3)
        for copy, original in zip(copies, archived.ct, strict=True):
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(copy, keyword, getattr(original, keyword))
            copy.file_meta.MediaStorageSOPInstanceUID = original.SOPInstanceUID
            copy.PatientName, copy.PatientID = "Siteb^Other", "QR-B"
        files = write_series(tmp_path_factory.mktemp("site-b"), copies)
        stored = subprocess.run(
            [dcmtk("storescu"), "-aec", "QREDGE", "127.0.0.1", str(gateway.port), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert stored.returncode == 0, stored.stderr
        uid = archived.ct[0].StudyInstanceUID
        query = _study_query(uid)
        query.NumberOfStudyRelatedInstances = ""

        def indexed_in_both() -> bool:
            found = [ds for status, ds in _find(gateway.port, query) if ds is not None]
            return any(ds.PatientID == "QR-B" and int(ds.NumberOfStudyRelatedInstances) == 3 for ds in found)

        wait_for(indexed_in_both, 120, "site B's copy to be indexed")
        yield gateway
    finally:
        gateway.stop()


def test_a_uid_in_two_sites_is_found_twice_flagged_and_never_retrieved_merged(
    two_sites: Gateway, archived: Archived, storescp: Path, tmp_path: Path
) -> None:
    uid = archived.ct[0].StudyInstanceUID
    # WHEN a workstation queries the UID: both studies come back, each with its own patient,
    # each flagged 0xFF01 with a comment naming the number of sites (no PHI)
    ae = AE(ae_title="WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", two_sites.port, ae_title="QREDGE")
    try:
        results = list(assoc.send_c_find(_study_query(uid), StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    assert [int(status.Status) for status, _ in results] == [0xFF01, 0xFF01, 0x0000]
    assert [status.ErrorComment for status, _ in results[:2]] == [
        "StudyInstanceUID in 2 sites: cannot retrieve"
    ] * 2
    assert sorted(str(ds.PatientID) for _, ds in results[:2]) == ["QR-1", "QR-B"]
    # WHEN movescu asks for that study to be moved
    moved = movescu(two_sites.port, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid}")
    output = moved.stdout + moved.stderr
    # THEN it is refused (unable to process) before any sub-operation and nothing is sent
    assert "Received Final Move Response (Failed: UnableToProcess)" in output, output
    assert "Release Failed" not in output, output
    assert list(storescp.iterdir()) == []
    # AND pynetdicom sees the reason: the number of sites, no UID or patient data
    [(status, answer, _)] = _move(two_sites.port, _study_query(uid), "STORESCP")
    assert status == 0xC002
    assert answer.ErrorComment == "the identifier matches in 2 sites: not merged"
    # AND a series or an image of it, and C-GET, are refused the same way
    got = getscu(
        two_sites.port,
        tmp_path / "got",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={uid}",
        f"SeriesInstanceUID={archived.ct[0].SeriesInstanceUID}",
    )
    assert "Received C-GET Response (Failed: UnableToProcess)" in got.stdout + got.stderr, got.stderr
    assert "Release Failed" not in got.stdout + got.stderr
    assert list((tmp_path / "got").iterdir()) == []
    # AND the other study (one site only) is still retrieved
    fine = getscu(
        two_sites.port,
        tmp_path / "mr",
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={archived.mr[0].StudyInstanceUID}",
    )
    assert fine.returncode == 0, fine.stderr
    _same_instances(sorted((tmp_path / "mr").iterdir()), archived.mr)


def _study_query(uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    query.PatientID = ""
    return query
