"""C-STORE responses packed as bytes instead of through pynetdicom's message machinery.

For each response pynetdicom builds a primitive (validating every value), converts it
to a message and encodes the command set through pydicom: ~250 us per instance, about
a quarter of the gateway's Python time per instance under load. A C-STORE-RSP command
set is seven fixed elements (PS3.7 9.3.1.2, implicit VR little endian); packed here
(same bytes as pynetdicom's, tested) and queued to the DUL as one P-DATA.

``edge_gateway.pynetdicom_fast_path`` replaces ``StorageServiceClass.SCP`` with
``_storage_scp`` (after its guard); the handler is still called through pynetdicom's
events. Differences from stock, all unused by the gateway: a handler's status Dataset
keeps Status and ErrorComment (0000,0902) only (stock also sends Offending Element and
Error ID); ``EVT_DIMSE_SENT`` is not triggered for the response (it goes to the DUL as
P-DATA directly; ``EVT_PDU_SENT`` still is); a handler that raises gets 0xC211 as in stock.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass

from edge_gateway.part10 import padded

log = logging.getLogger(__name__)
C_STORE_RSP = 0x8001
NO_DATASET = 0x0101
PROCESSING_FAILURE = 0xC211
COMMAND_LAST_FRAGMENT = b"\x03"  # message control header: command, last fragment


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def store_response(
    sop_class_uid: str, sop_instance_uid: str, message_id: int, status: int, error_comment: str = ""
) -> bytes:
    """The encoded command set of a C-STORE-RSP (PS3.7 9.3.1.2); ``error_comment`` (ASCII, at most
    64 characters, PS3.7 C.4.2) only with a failure or warning status."""
    comment = error_comment.encode("ascii", "replace")[:64] if error_comment and status else b""
    body = b"".join(
        (
            _element(0x0002, padded(sop_class_uid, b"\x00")),
            _element(0x0100, struct.pack("<H", C_STORE_RSP)),
            _element(0x0120, struct.pack("<H", message_id)),
            _element(0x0800, struct.pack("<H", NO_DATASET)),
            _element(0x0900, struct.pack("<H", status)),
            _element(0x0902, comment + b" " * (len(comment) % 2)) if comment else b"",
            _element(0x1000, padded(sop_instance_uid, b"\x00")),
        )
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _storage_scp(self: StorageServiceClass, req: C_STORE, context: PresentationContext) -> None:
    """StorageServiceClass.SCP: call the EVT_C_STORE handler, answer with a packed response."""
    try:
        status: Any = evt.trigger(self.assoc, evt.EVT_C_STORE, {"request": req, "context": context.as_tuple})
    except Exception:
        log.exception("C-STORE handler failed")
        status = PROCESSING_FAILURE
    if not self.assoc.is_established:
        return
    comment = ""
    if isinstance(status, Dataset):  # as in stock: Status (and here ErrorComment) taken from it
        comment = str(status.get("ErrorComment", "") or "")
        status = status.get("Status")
    if not isinstance(status, int) or not 0 <= status <= 0xFFFF:
        log.error("C-STORE handler returned an unusable status")
        status = PROCESSING_FAILURE
    command = store_response(
        str(req.AffectedSOPClassUID),
        str(req.AffectedSOPInstanceUID),
        int(req.MessageID or 0),
        status,
        comment,
    )
    data = P_DATA()
    # pynetdicom's annotation says tuples, its setter checks for lists.
    pdv = [int(context.context_id or 0), COMMAND_LAST_FRAGMENT + command]
    data.presentation_data_value_list = [pdv]  # type: ignore[list-item]
    self.dimse.dul.send_pdu(data)
