"""Packed C-STORE responses: the bytes pynetdicom would send, accepted by a real pynetdicom requestor."""

from __future__ import annotations

import pytest
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from edge_gateway import pynetdicom_fast_path
from edge_gateway.store_responses import store_response
from tests.helpers.dicom_factory import series_from


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "message_id", "status"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 1, 0x0000),  # even-length UIDs
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", 65535, 0xA700),  # odd: NUL padded
        ("1.2.840.10008.5.1.4.1.1.7", "2.25.1" + "7" * 58, 42, 0xC210),
    ],
)
def test_packed_response_is_pynetdicoms_encoding(
    sop_class: str, sop_instance: str, message_id: int, status: int
) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(1, 16384))
    [(_context, pdv)] = pdata.presentation_data_value_list
    assert store_response(sop_class, sop_instance, message_id, status) == pdv[1:]


@pytest.mark.parametrize("status", [0x0000, 0xA700])
def test_a_requestor_reads_the_status_and_uids(status: int) -> None:
    # GIVEN an SCP in this process answering with packed responses
    assert pynetdicom_fast_path.install()
    scp = AE(ae_title="EDGE")
    scp.add_supported_context(CTImageStorage)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda _event: status)]
    )
    assert server is not None
    try:
        scu = AE(ae_title="PACS")
        scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 10
        scu.add_requested_context(CTImageStorage)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="EDGE")
        assert assoc.is_established
        # WHEN a requestor stores three instances
        instances = series_from("CT_small.dcm", 3)
        answers = [assoc.send_c_store(ds) for ds in instances]
        assoc.release()
        # THEN each request got its answer, with the handler's status
        assert [a.Status for a in answers] == [status] * 3
    finally:
        scp.shutdown()


def test_a_failing_handler_answers_processing_failure() -> None:
    assert pynetdicom_fast_path.install()

    def broken(_event: evt.Event) -> int:
        raise RuntimeError("disk on fire")

    scp = AE(ae_title="EDGE")
    scp.add_supported_context(CTImageStorage)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, broken)])
    assert server is not None
    try:
        scu = AE(ae_title="PACS")
        scu.add_requested_context(CTImageStorage)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="EDGE")
        answer = assoc.send_c_store(series_from("CT_small.dcm", 1)[0])
        assoc.release()
        assert answer.Status == 0xC211
    finally:
        scp.shutdown()
