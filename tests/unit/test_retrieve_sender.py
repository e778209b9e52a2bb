"""edge_gateway.retrieve_sender: what a retrieved instance becomes for its destination (as stored,
converted, or a failure with a reason), the guard, and the sending path over a real association
in both modes (installed: the stored file streamed; stock: a decoded Dataset)."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, _config, evt
from pynetdicom.service_class import QueryRetrieveServiceClass

from edge_gateway import pynetdicom_guard, retrieve_sender
from edge_gateway.retrieve_sender import Retrieved, StoredFile, Unsendable, prepare
from tests.helpers.dicom_factory import series_from


@pytest.fixture(autouse=True)
def stock_after() -> Iterator[None]:
    retrieve_sender.remove()
    yield
    retrieve_sender.remove()


def _part10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _retrieved(ds: Dataset, tmp_path: Path | None = None) -> Retrieved:
    data = _part10(ds)
    path = None
    if tmp_path is not None:
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(data)
    return Retrieved(ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID, data, path)


def test_the_recorded_sources_are_the_installed_ones() -> None:
    assert pynetdicom_guard.mismatches(retrieve_sender.owners(), retrieve_sender.STOCK_SOURCE_SHA256) == []


def test_as_stored_when_the_destination_accepts_the_stored_syntax(tmp_path: Path) -> None:
    [ds] = series_from("MR_small_RLE.dcm", 1)
    got = _retrieved(ds, tmp_path)
    # streamed from its file when the sending path is attached
    streamed = prepare(got, [RLELossless, ExplicitVRLittleEndian], stream=True)
    assert isinstance(streamed, StoredFile)
    assert streamed.stored_path == got.path
    assert streamed.SOPInstanceUID == ds.SOPInstanceUID
    # read as it is otherwise: same pixel bytes, same syntax
    read = prepare(got, [RLELossless], stream=False)
    assert not isinstance(read, StoredFile)
    assert read.file_meta.TransferSyntaxUID == RLELossless
    assert read.PixelData == ds.PixelData


def test_compressed_is_decoded_when_only_uncompressed_is_accepted() -> None:
    [ds] = series_from("MR_small_RLE.dcm", 1)
    converted = prepare(_retrieved(ds), [ImplicitVRLittleEndian], stream=True)
    assert converted.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # pynetdicom makes it implicit
    assert converted.SOPInstanceUID == ds.SOPInstanceUID
    assert (converted.pixel_array == ds.pixel_array).all()


def test_uncompressed_goes_as_read_for_pynetdicom_to_convert() -> None:
    [ds] = series_from("CT_small.dcm", 1)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    read = prepare(_retrieved(ds), [ImplicitVRLittleEndian], stream=True)
    assert read.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert read.PixelData == ds.PixelData


def test_what_cannot_be_sent_fails_with_a_reason() -> None:
    [ds] = series_from("MR_small_RLE.dcm", 1)
    with pytest.raises(Unsendable, match="no context"):
        prepare(_retrieved(ds), [], stream=False)
    with pytest.raises(Unsendable, match="neither the stored syntax nor an uncompressed"):
        prepare(_retrieved(ds), ["1.2.840.10008.1.2.4.80"], stream=False)
    ds.PixelData = encapsulate([b"\x00" * 64])  # an RLE header without segments
    with pytest.raises(Unsendable, match="cannot be converted"):
        prepare(_retrieved(ds), [ExplicitVRLittleEndian], stream=False)
    with pytest.raises(Unsendable, match="cannot be parsed"):
        prepare(
            Retrieved(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, b"junk"),
            [ExplicitVRLittleEndian],
            stream=False,
        )


def test_install_and_remove() -> None:
    stock, stock_get = QueryRetrieveServiceClass._move_scp, QueryRetrieveServiceClass._get_scp
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    assert retrieve_sender.install()
    assert QueryRetrieveServiceClass._move_scp is not stock
    assert QueryRetrieveServiceClass._get_scp is not stock_get
    assert _config.STORE_SEND_CHUNKED_DATASET is True
    retrieve_sender.remove()
    assert QueryRetrieveServiceClass._move_scp is stock
    assert QueryRetrieveServiceClass._get_scp is stock_get
    assert _config.STORE_SEND_CHUNKED_DATASET is chunked
    assert not retrieve_sender.installed()


def test_a_changed_source_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = dict(retrieve_sender.STOCK_SOURCE_SHA256, **{"Association.send_c_store": "0" * 64})
    monkeypatch.setattr(retrieve_sender, "STOCK_SOURCE_SHA256", changed)
    stock = QueryRetrieveServiceClass._move_scp
    assert not retrieve_sender.install()
    assert QueryRetrieveServiceClass._move_scp is stock
    assert not retrieve_sender.attach(object())


@pytest.mark.parametrize("installed", [True, False], ids=["sending-path", "stock"])
def test_sent_over_a_real_association_byte_for_byte(
    installed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a Storage SCP keeping the data set bytes it receives, and an RLE instance stored on disk
    received: list[bytes] = []
    requests: list[Any] = []

    def on_store(event: evt.Event) -> int:
        received.append(bytes(event.request.DataSet.getvalue()))  # type: ignore[union-attr]
        requests.append(event.request)
        return 0x0000

    [ds] = series_from("MR_small_RLE.dcm", 1)
    got = _retrieved(ds, tmp_path)
    raw_sends: list[Dataset | None] = []
    real_send_raw = retrieve_sender.send_raw

    def spy(*args: Any, **kwargs: Any) -> Dataset | None:
        raw_sends.append(real_send_raw(*args, **kwargs))
        return raw_sends[-1]

    monkeypatch.setattr(retrieve_sender, "send_raw", spy)
    scp = AE(ae_title="DEST")
    scp.maximum_pdu_size = 4096  # many PDVs per data set
    scp.add_supported_context(ds.SOPClassUID, [RLELossless])
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        if installed:
            assert retrieve_sender.install()
        scu = AE(ae_title="EDGE")
        scu.add_requested_context(ds.SOPClassUID, [RLELossless])
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="DEST")
        assert assoc.is_established
        attached = retrieve_sender.attach(assoc)
        assert attached is installed
        # WHEN what prepare() makes of it is sent as pynetdicom's C-MOVE/C-GET code would
        outgoing = prepare(got, retrieve_sender.accepted_syntaxes(assoc, ds.SOPClassUID), stream=attached)
        assert isinstance(outgoing, StoredFile) is installed
        status = assoc.send_c_store(outgoing, msg_id=7, originator_aet="WS1", originator_id=3)
        assoc.release()
    finally:
        server.shutdown()
    # THEN the SCP received the stored data set, byte for byte in the streamed mode
    assert int(status.Status) == 0x0000
    [data] = received
    stored = _part10(ds)
    if installed:  # the raw send did it (not pynetdicom's path send after a fallback)
        assert stored.endswith(data)
        assert len(raw_sends) == 1 and raw_sends[0] is not None
    else:
        assert raw_sends == []
    copy = dcmread(BytesIO(data), force=True)
    assert copy.PixelData == ds.PixelData
    [request] = requests
    assert request.MessageID == 7
    assert request.AffectedSOPInstanceUID == ds.SOPInstanceUID
    assert request.MoveOriginatorApplicationEntityTitle == "WS1"
    assert request.MoveOriginatorMessageID == 3


def test_command_set_and_data_set_offset() -> None:
    from pydicom.filereader import read_dataset

    command = retrieve_sender.c_store_request("1.2.840.10008.5.1.4.1.1.2", "1.2.3", 9, 0, "WS1", 4)
    decoded = read_dataset(BytesIO(command), is_implicit_VR=True, is_little_endian=True)
    assert decoded.CommandGroupLength == len(command) - 12
    assert (decoded.CommandField, decoded.MessageID, decoded.Priority) == (1, 9, 0)
    assert decoded.AffectedSOPInstanceUID == "1.2.3"
    assert decoded.MoveOriginatorApplicationEntityTitle == "WS1"
    assert decoded.MoveOriginatorMessageID == 4
    [ds] = series_from("CT_small.dcm", 1)
    data = _part10(ds)
    offset = retrieve_sender.dataset_offset(data)
    assert offset is not None
    assert dcmread(BytesIO(data[offset:]), force=True).SOPInstanceUID == ds.SOPInstanceUID
    assert retrieve_sender.dataset_offset(data[128:]) is None  # no preamble: not the plain header
