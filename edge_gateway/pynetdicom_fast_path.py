"""The gateway's C-STORE fast path inside pynetdicom: the one place that installs and removes it.

What it replaces (``fast_path = true``, the default; ``false`` runs stock pynetdicom):

- ``reactor_waits``: the 1 ms polling sleeps of the DUL and association reactors of
  *acceptor* associations become waits on the socket and an eventfd (Linux); every
  ``AssociationSocket.recv`` reads a whole PDU in as few calls as arrive, with TCP quick
  ACKs where the platform has them.
- ``store_responses``: ``StorageServiceClass.SCP`` answers with a packed C-STORE-RSP.

Guard (``pynetdicom_guard``): pynetdicom inside ``SUPPORTED`` and the SHA-256 of the
source of every function replaced or relied on (the loops whose sleeps are intercepted,
the constructors that make the queues it wakes) as recorded here; otherwise nothing is
installed, a warning names what changed, and the gateway runs stock (slower, correct).
Without ``os.eventfd`` the reactor waits are left out (the rest still installs); without
``socket.TCP_QUICKACK`` reads do not ask for quick ACKs. Nothing happens at import time.

Stock semantics kept or different: see ``store_responses`` (status Dataset: Status and
ErrorComment kept; ``EVT_DIMSE_SENT`` not triggered for responses). Chunked datasets
(``_config.STORE_RECV_CHUNKED_DATASET``) are off in both modes: the gateway's handler
reads the received bytes from memory. Requestor associations keep stock reactor loops.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from edge_gateway import pynetdicom_guard, reactor_waits, store_responses

log = logging.getLogger(__name__)

# sha256 of inspect.getsource(...) in pynetdicom 3.0.4.
STOCK_SOURCE_SHA256 = {
    "DULServiceProvider.run_reactor": "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803",
    "DULServiceProvider.__init__": "c82dafa9438ddf70685917cb15d2bfbc814aa0ad5233ffb0ae650faedc7570f0",
    "Association._run_reactor": "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee",
    "AssociationSocket.recv": "6bc20a33b1b7cfe76d4ad4407ca242563bc6206fde4b4e1cf7a2fbb1f11d621d",
    "StorageServiceClass.SCP": "63afca7fc6c6e7ee6e6eb303dd6aa72c1e69dbfcb94dd91c9e90ea6d900a4c40",
    "DIMSEServiceProvider.__init__": "bbecd186810e77006d189aff29c42e76d226cd6b34cbb12066c56300a8280ef4",
}
_state: dict[str, Any] = {}


def owners() -> dict[str, Any]:
    """The pynetdicom classes named in ``STOCK_SOURCE_SHA256``."""
    from pynetdicom import association, dimse, dul, transport
    from pynetdicom.service_class import StorageServiceClass

    return {
        "DULServiceProvider": dul.DULServiceProvider,
        "Association": association.Association,
        "AssociationSocket": transport.AssociationSocket,
        "StorageServiceClass": StorageServiceClass,
        "DIMSEServiceProvider": dimse.DIMSEServiceProvider,
    }


def event_waits_available() -> bool:
    """os.eventfd exists (Linux, Python 3.10+)."""
    return hasattr(os, "eventfd") and hasattr(os, "eventfd_write")


def installed() -> bool:
    """True while the fast path's replacements are installed in pynetdicom."""
    return bool(_state)


def install() -> bool:
    """Install the fast path in this process; False (with a warning) when the guard refuses."""
    if _state:
        return True
    if not pynetdicom_guard.install_allowed("C-STORE fast path", owners, STOCK_SOURCE_SHA256):
        return False
    from pynetdicom.service_class import StorageServiceClass

    waits = event_waits_available()
    if not waits:
        log.warning("no os.eventfd on this platform: pynetdicom's reactors keep polling")
    reactor_waits.install(event_waits=waits)
    _state["SCP"] = StorageServiceClass.SCP
    StorageServiceClass.SCP = store_responses._storage_scp  # type: ignore[method-assign]
    return True


def remove() -> None:
    """Stock pynetdicom in this process (for associations that start from now on)."""
    if not _state:
        return
    from pynetdicom.service_class import StorageServiceClass

    reactor_waits.remove()
    StorageServiceClass.SCP = _state.pop("SCP")  # type: ignore[method-assign]
    _state.clear()
