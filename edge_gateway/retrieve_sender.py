"""C-STORE sub-operations of C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): as stored, converted, or failed.

What goes out for one retrieved instance, given the transfer syntaxes the destination
accepted for its SOP class (``prepare``):

- the stored syntax is accepted: the stored Part 10 file goes out as it is. With the
  sending path installed (below) pynetdicom streams the file's data set from disk
  without decoding it (``send_c_store(path)`` with ``_config.STORE_SEND_CHUNKED_DATASET``);
  without it the bytes are read into a Dataset and re-encoded (same values);
- an uncompressed instance and an uncompressed syntax accepted: pynetdicom converts
  between Implicit and Explicit VR Little Endian itself;
- a compressed (or big endian) instance and only uncompressed syntaxes accepted: the
  pixels are decoded to Explicit VR Little Endian by ``query.transcode`` (the codecs the
  query API uses for WADO-RS, within its pixel budget), same SOP Instance UID;
- anything else (no decoder, corrupt pixel data, over the pixel budget, nothing
  acceptable): ``Unsendable`` with a PHI-free reason; the caller makes it a failed
  sub-operation (its UID is in the Failed SOP Instance UID List) and counts the reason.

The sending path inside pynetdicom (``install()`` / ``remove()``, one place, STYLE 18):

1. ``attach(assoc)`` gives one association (the move destination's, or a C-GET requestor's
   for the duration of the request) a ``send_c_store`` that sends a ``StoredFile`` as raw
   bytes: the C-STORE-RQ command set packed here (PS3.7 9.3.1.1, implicit VR little endian)
   and the file's data set bytes cut into P-DATA PDVs of the peer's maximum PDU length
   (PS3.8 9.3.5, E.2), handed to pynetdicom's DUL in order (``send_pdu``: the DUL thread
   writes them, so no other message interleaves), then pynetdicom's own wait for the
   response (the same reactor pause as ``send_c_store``). What pynetdicom would do per
   message (pydicom encoding of the command set, group length, a file read per fragment)
   is skipped. A file without a plain File Meta header, or whose syntax was not accepted,
   goes to pynetdicom's ``send_c_store(path)``; everything else to its own method unchanged.
2. ``QueryRetrieveServiceClass._move_scp`` and ``_get_scp`` are wrapped: before pynetdicom
   asks the handler for a count (and, for a move, contacts the destination), the handler's
   owner may refuse the request with its own status and Error Comment
   (``move_refusal(calling AE, destination)``, ``retrieve_refusal(event)``). So "not
   permitted" is answered 0x0124 (PS3.7 C.5) instead of pynetdicom's only choice, 0xA801,
   and a request failing before any sub-operation gets one final response with no
   identifier and no sub-operation counts, where stock pynetdicom would count the handler's
   required count of 1 as a failed sub-operation and send a Failed SOP Instance UID List
   (which dcmtk 3.6.7 getscu left unread: "P-Data PDU arrived" at release).

Guard (``pynetdicom_guard``): the version range and the source hashes of the functions
this relies on (``send_c_store``'s path branch and its pause/wait/status steps, which the raw
send repeats; ``_move_scp`` / ``_get_scp`` calling the association's ``send_c_store`` with the
handler's Dataset; the DUL's ``send_pdu`` and the DIMSE ``get_msg``). On a mismatch nothing is
installed: instances go out as decoded Datasets (slower, same bytes on the wire) and a
refused move is answered 0xA801.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from edge_gateway import pynetdicom_guard

log = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
NOT_AUTHORISED = 0x0124

# sha256 of inspect.getsource(...) in pynetdicom 3.0.4.
STOCK_SOURCE_SHA256 = {
    "Association.send_c_store": "fa5a8127f349f8e75698f4cdf2b4dbe3f38e3e9e320a8cf45c15bf8333f9c283",
    "QueryRetrieveServiceClass._move_scp": "5c14d1be3d737befcc148893bcd529a03695e82f8f943f19b640ff4f32382742",
    "QueryRetrieveServiceClass._get_scp": "8ca1538e3e56c4f7317f3d8bd0d0e009d596e9f3c57027db3128ec7e728e46a6",
    "Association._check_received_status": "364c3ae215b58646a8ab3accac6dddac5ddc820b7bcf210d38d98f52ff19844a",
    "Association._handle_no_response": "6f3d62518395c3a8272f401da36d2136053cda76b6cafd6b12e045b8850634fd",
    "DULServiceProvider.send_pdu": "7cbce5da8594124e9e70c790a68df640d21df11af4220783e752bc607de8dde6",
    "DIMSEServiceProvider.get_msg": "890e3e04283f5aeb756236f1a4dd35d3a10bbdd52f3efa3f3950c01f47bd2b34",
}
C_STORE_RQ = 0x0001
DATASET_PRESENT = 0x0000  # PS3.7 E.1: any value but 0x0101
COMMAND, LAST = 0x01, 0x02  # message control header bits (PS3.8 E.2)
UNLIMITED_FRAGMENT = 4 * 1024 * 1024  # the peer set no maximum PDU length
_state: dict[str, Any] = {}

MoveRefusal = Callable[[str, str], "tuple[int, str] | None"]


class Unsendable(Exception):
    """The instance cannot be sent in a syntax the destination accepted; the message is PHI-free."""


class StoredFile(Dataset):
    """A retrieved instance to send from its Part 10 file without decoding it.

    Carries only what pynetdicom's C-MOVE/C-GET code reads from a yielded dataset
    (SOP Class UID, SOP Instance UID, the file meta's Transfer Syntax UID) and ``path``.
    """

    def __init__(self, path: Path, sop_class: str, sop_uid: str, transfer_syntax: str) -> None:
        super().__init__()
        self.SOPClassUID = UID(sop_class)
        self.SOPInstanceUID = UID(sop_uid)
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        self.stored_path = path


class Retrieved:
    """One instance read from the archive: its Part 10 bytes and/or a file holding them."""

    def __init__(
        self,
        sop_class: str,
        sop_uid: str,
        transfer_syntax: str,
        data: bytes | None = None,
        path: Path | None = None,
    ) -> None:
        """``transfer_syntax`` is the stored one (the index item's), ``path`` a Part 10 file with the
        same bytes as ``data`` (one of the two at least)."""
        self.sop_class = sop_class
        self.sop_uid = sop_uid
        self.transfer_syntax = transfer_syntax
        self._data = data
        self.path = path

    @property
    def data(self) -> bytes:
        """The Part 10 bytes (read from ``path`` when only the file is known)."""
        if self._data is None:
            assert self.path is not None
            return self.path.read_bytes()
        return self._data


def accepted_syntaxes(assoc: Any, sop_class: str) -> list[str]:
    """Transfer syntaxes ``assoc`` may send ``sop_class`` in as C-STORE SCU (accepted contexts)."""
    return [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if str(cx.abstract_syntax) == sop_class and cx.as_scu and cx.transfer_syntax
    ]


def prepare(instance: Retrieved, syntaxes: list[str], stream: bool) -> Dataset:
    """The dataset to yield for one C-STORE sub-operation (module docstring); raises Unsendable.

    ``syntaxes``: what the destination accepted for the instance's SOP class.
    ``stream``: the sending path is attached, so a ``StoredFile`` will be sent from disk.
    """
    if not syntaxes:
        raise Unsendable("the destination accepted no context for this SOP class")
    stored = instance.transfer_syntax
    if stored in syntaxes:
        if stream and instance.path is not None:
            return StoredFile(instance.path, instance.sop_class, instance.sop_uid, stored)
        return _read(instance.data)
    if stored in UNCOMPRESSED and any(s in UNCOMPRESSED for s in syntaxes):
        return _read(instance.data)  # pynetdicom converts between the two
    if not any(s in UNCOMPRESSED for s in syntaxes):
        raise Unsendable("the destination accepts neither the stored syntax nor an uncompressed one")
    return _read(convert(instance.data))


def convert(data: bytes) -> bytes:
    """Part 10 bytes re-encoded in Explicit VR Little Endian, pixels decoded; raises Unsendable."""
    from common.decode_limits import LimitExceeded
    from query.pixel_layout import FrameError
    from query.transcode import to_explicit_little_endian

    try:
        return to_explicit_little_endian(data)
    except LimitExceeded as exc:
        raise Unsendable("pixel data above the decode budget: not converted") from exc
    except FrameError as exc:
        raise Unsendable(f"cannot be converted to Explicit VR Little Endian ({exc})") from exc


def _read(data: bytes) -> Dataset:
    try:
        return dcmread(BytesIO(data))
    except Exception as exc:  # a stored file pydicom cannot parse is one failed sub-operation
        raise Unsendable(f"the stored instance cannot be parsed ({type(exc).__name__})") from exc


# The sending path inside pynetdicom ---------------------------------------------------------


def owners() -> dict[str, Any]:
    """The pynetdicom classes named in ``STOCK_SOURCE_SHA256``."""
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.service_class import QueryRetrieveServiceClass

    return {
        "Association": Association,
        "QueryRetrieveServiceClass": QueryRetrieveServiceClass,
        "DULServiceProvider": DULServiceProvider,
        "DIMSEServiceProvider": DIMSEServiceProvider,
    }


def installed() -> bool:
    """True while the sending path is installed in this process."""
    return bool(_state)


def install() -> bool:
    """Install the sending path in this process; False (with a warning) when the guard refuses."""
    if _state:
        return True
    if not pynetdicom_guard.install_allowed("retrieve sending path", owners, STOCK_SOURCE_SHA256):
        return False
    from pynetdicom import _config
    from pynetdicom.service_class import QueryRetrieveServiceClass

    _state["chunked"] = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send_c_store(path) streams the file's data set
    stock = QueryRetrieveServiceClass._move_scp
    stock_get = QueryRetrieveServiceClass._get_scp
    _state["_move_scp"], _state["_get_scp"] = stock, stock_get

    def _move_scp(self: Any, req: Any, context: Any) -> None:
        if not _refused(self, req, context, move=True):
            stock(self, req, context)

    def _get_scp(self: Any, req: Any, context: Any) -> None:
        if not _refused(self, req, context, move=False):
            stock_get(self, req, context)

    _move_scp.__wrapped_stock__ = stock  # type: ignore[attr-defined]
    _get_scp.__wrapped_stock__ = stock_get  # type: ignore[attr-defined]
    QueryRetrieveServiceClass._move_scp = _move_scp  # type: ignore[method-assign]
    QueryRetrieveServiceClass._get_scp = _get_scp  # type: ignore[method-assign]
    return True


def remove() -> None:
    """Stock pynetdicom in this process (associations attached before keep their sender)."""
    if not _state:
        return
    from pynetdicom import _config
    from pynetdicom.service_class import QueryRetrieveServiceClass

    QueryRetrieveServiceClass._move_scp = _state["_move_scp"]  # type: ignore[method-assign]
    QueryRetrieveServiceClass._get_scp = _state["_get_scp"]  # type: ignore[method-assign]
    _config.STORE_SEND_CHUNKED_DATASET = _state["chunked"]
    _state.clear()


def attach(assoc: Any) -> bool:
    """Give ``assoc`` the sending path's ``send_c_store`` (False when not installed)."""
    if not _state:
        return False
    stock = type(assoc).send_c_store.__get__(assoc)

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, StoredFile):
            sent = send_raw(assoc, dataset, *args, **kwargs)
            if sent is not None:
                return sent
            return stock(dataset.stored_path, *args, **kwargs)  # type: ignore[no-any-return]
        return stock(dataset, *args, **kwargs)  # type: ignore[no-any-return]

    assoc.send_c_store = send_c_store
    return True


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad * (len(raw) % 2)


def c_store_request(
    sop_class: str,
    sop_uid: str,
    message_id: int,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> bytes:
    """The encoded command set of a C-STORE-RQ with a data set (PS3.7 9.3.1.1, implicit VR LE)."""
    body = [
        _element(0x0002, _padded(sop_class, b"\x00")),
        _element(0x0100, struct.pack("<H", C_STORE_RQ)),
        _element(0x0110, struct.pack("<H", message_id)),
        _element(0x0700, struct.pack("<H", priority)),
        _element(0x0800, struct.pack("<H", DATASET_PRESENT)),
        _element(0x1000, _padded(sop_uid, b"\x00")),
    ]
    if originator_aet:
        body.append(_element(0x1030, _padded(originator_aet.strip()[:16], b" ")))
    if originator_id is not None:
        body.append(_element(0x1031, struct.pack("<H", originator_id)))
    joined = b"".join(body)
    return _element(0x0000, struct.pack("<I", len(joined))) + joined


def dataset_offset(data: bytes) -> int | None:
    """Where the data set starts in Part 10 bytes (after the File Meta Information), or None when
    the header is not the plain one (128-byte preamble, "DICM", explicit VR group length)."""
    if len(data) < 144 or data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return None
    (group_length,) = struct.unpack_from("<I", data, 140)
    offset = 144 + int(group_length)
    return offset if offset <= len(data) else None


def pdata_fragments(context_id: int, command: bytes, dataset: bytes, max_pdu: int) -> Iterator[Any]:
    """P-DATA primitives carrying one message: the command, then the data set, each in PDVs of at
    most ``max_pdu`` - 6 bytes (PS3.8 9.3.5: the PDV item header is 6 bytes), one PDV per PDU."""
    from pynetdicom.pdu_primitives import P_DATA

    size = max_pdu - 6 if max_pdu > 6 else UNLIMITED_FRAGMENT
    for control, payload in ((COMMAND, command), (0, dataset)):
        view = memoryview(payload)
        for start in range(0, max(len(view), 1), size):
            last = start + size >= len(view)
            pdata = P_DATA()
            header = bytes([control | (LAST if last else 0)])
            pdata.presentation_data_value_list = [[context_id, header + view[start : start + size].tobytes()]]  # type: ignore[list-item]
            yield pdata


def send_raw(
    assoc: Any,
    stored: StoredFile,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset | None:
    """C-STORE of a stored file's bytes as they are (module docstring); None when it must go
    through pynetdicom instead (no plain File Meta header, syntax not accepted, closed).

    Returns the C-STORE-RSP status as ``send_c_store`` does (an empty Dataset when the peer did
    not answer within the DIMSE timeout; the association is then aborted, as stock).
    """
    syntax = str(stored.file_meta.TransferSyntaxUID)
    sop_class = str(stored.SOPClassUID)
    context = next(
        (
            cx
            for cx in assoc.accepted_contexts
            if str(cx.abstract_syntax) == sop_class and cx.as_scu and str(cx.transfer_syntax[0]) == syntax
        ),
        None,
    )
    if context is None or not assoc.is_established:
        return None
    data = stored.stored_path.read_bytes()
    offset = dataset_offset(data)
    if offset is None:
        return None
    command = c_store_request(
        sop_class, str(stored.SOPInstanceUID), msg_id, priority, originator_aet, originator_id
    )
    max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
    # As send_c_store: pause the reactor so that it cannot take the response, send, wait.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    for pdata in pdata_fragments(int(context.context_id), command, data[offset:], max_pdu):
        assoc.dul.send_pdu(pdata)
    _, rsp = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    status: Dataset = assoc._check_received_status(rsp)
    return status


def detach(assoc: Any) -> None:
    """Back to the class's ``send_c_store`` for ``assoc``."""
    assoc.__dict__.pop("send_c_store", None)


def _refused(service: Any, req: Any, context: Any, move: bool) -> bool:
    """Answer a C-MOVE or C-GET its handler's owner refuses before any sub-operation; True when
    answered (one final response: the owner's status and Error Comment, no sub-operation counts,
    no identifier, and for a move no association with the destination).

    Asks the owner's ``move_refusal(calling AE, destination)`` (C-MOVE), then its
    ``retrieve_refusal(event)`` (the event the handler will get); either gives (status, comment)
    or None.
    """
    from pynetdicom import evt
    from pynetdicom.dimse_primitives import C_GET, C_MOVE

    kind = evt.EVT_C_MOVE if move else evt.EVT_C_GET
    handler = service.assoc.get_handlers(kind)
    target = handler[0] if isinstance(handler, tuple) else None
    target = getattr(target, "__wrapped__", target)
    owner = getattr(target, "__self__", None)
    verdict: tuple[int, str] | None = None
    decide: MoveRefusal | None = getattr(owner, "move_refusal", None)
    if move and decide is not None:
        calling = str(service.assoc.requestor.ae_title).strip()
        verdict = decide(calling, str(req.MoveDestination or "").strip())
    precheck: Callable[[Any], tuple[int, str] | None] | None = getattr(owner, "retrieve_refusal", None)
    if verdict is None and precheck is not None:
        event = evt.Event(
            service.assoc,
            kind,
            {"request": req, "context": context.as_tuple, "_is_cancelled": service.is_cancelled},
        )
        verdict = precheck(event)
    if verdict is None:
        return False
    rsp: Any = C_MOVE() if move else C_GET()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
    rsp.Status, rsp.ErrorComment = verdict[0], verdict[1][:64]
    service.dimse.send_msg(rsp, context.context_id)
    return True
