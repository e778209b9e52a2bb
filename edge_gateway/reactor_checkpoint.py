"""A pause handshake for pynetdicom's association reactor that cannot lose a DIMSE response.

The race (pynetdicom 3.0.4, every requestor; docs/upstream/pynetdicom-reactor-race.md):
``send_c_store`` (and every other ``send_*``, ``release``) pauses the reactor with
``_reactor_checkpoint.clear()`` and then waits for ``_is_paused``. The reactor sets
``_is_paused = True`` before ``_reactor_checkpoint.wait()`` and ``False`` after it. After
the previous ``send_*`` called ``set()``, the reactor thread is woken but may not have
run yet: ``_is_paused`` is still True, so the next ``send_*`` goes ahead at once, sends
its request, and the reactor then runs one more loop whose non-blocking ``get_msg``
takes the response. The reactor hands it to ``_serve_request`` ("Received unexpected
C-STORE service message"); the caller waits out the DIMSE timeout and aborts.

The fix: the checkpoint itself knows whether the reactor is parked in it. ``_is_paused``
becomes a property that reads that, not a flag the reactor writes: a ``set()`` un-parks
at once (under the checkpoint's lock), so the next ``clear()`` waits until the reactor
has finished its loop and parked again, before the request is sent. Everything else in
pynetdicom is unchanged; ``kill()`` (the reactor has exited) still counts as paused.

``install()`` / ``remove()`` change the ``Association`` class of this process; only
associations created after ``install()`` get the new checkpoint. The guard
(``edge_gateway.pynetdicom_guard``) checks the version and the source of every function
whose behaviour this relies on; on any difference nothing is installed and a warning
says so. Used by every requestor of the project (tests' senders, bench, and any future
outgoing association of the gateway: C-STORE sub-operations, N-EVENT-REPORT).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from pynetdicom import association

from edge_gateway import pynetdicom_guard

# sha256 of inspect.getsource in pynetdicom 3.0.4 of what this fix relies on: where the
# checkpoint is made (__init__), the only waiter (_run_reactor), the pausing callers' spin
# (send_c_store, release) and the exit that counts as paused (kill).
STOCK_SOURCE_SHA256 = {
    "Association.__init__": "eb07516b8009ad8fa338201dea39578380fbf9f2c59fa5e368e20250eb97c4ea",
    "Association._run_reactor": "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee",
    "Association.send_c_store": "fa5a8127f349f8e75698f4cdf2b4dbe3f38e3e9e320a8cf45c15bf8333f9c283",
    "Association.release": "c7d713502b77d70284320ac20245444b78f49a9d37b6a351d38e18344edaae43",
    "Association.kill": "8f9713666a7f4cffd840899f023090e9786668945a7c844f99d7a834077c3972",
    # Sets _is_paused = True around an SCP handler, which may send_*() from the reactor's own
    # thread (C-GET sub-operations): there the stock flag still decides (see _is_paused_get).
    "Association._serve_request": "2f24c1759cdf6c8c433094f2a8dd8144f76f5547f03daed7b94e0f78bc12f877",
}
_STOCK = "__wrapped_stock__"


class ReactorCheckpoint:
    """Stands in for the ``threading.Event`` pynetdicom pauses its reactor with.

    ``parked`` is True only while the reactor is blocked in ``wait()`` and no ``set()``
    has happened since it began waiting.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._open = True
        self._parked = False
        self._sets = 0  # a waiter is released by any set() after it began, even if clear() followed

    def is_set(self) -> bool:
        """True while the checkpoint is open (the reactor may run), as ``threading.Event.is_set``."""
        return self._open

    def set(self) -> None:
        """Open the checkpoint and release every waiter, even one that a later ``clear()`` would re-close."""
        with self._condition:
            self._open = True
            self._parked = False
            self._sets += 1
            self._condition.notify_all()

    def clear(self) -> None:
        """Close the checkpoint: the reactor parks at its next ``wait()``."""
        with self._condition:
            self._open = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the checkpoint is opened or ``timeout`` seconds pass; True if it was opened."""
        with self._condition:
            if self._open:
                return True
            began = self._sets
            self._parked = True
            released = self._condition.wait_for(lambda: self._sets != began, timeout)
            self._parked = False
            return released

    @property
    def parked(self) -> bool:
        """True only while the reactor is blocked in ``wait()`` with no ``set()`` since it began waiting."""
        with self._condition:
            return self._parked


def _is_paused_get(self: association.Association) -> bool:
    checkpoint = self._reactor_checkpoint
    # On the reactor's own thread (an SCP handler sending C-GET sub-operations) the reactor
    # cannot be racing the caller: it *is* the caller, and _serve_request's flag decides as in
    # stock pynetdicom. Any other thread asks the checkpoint whether the reactor is parked.
    if isinstance(checkpoint, ReactorCheckpoint) and threading.current_thread() is not self:
        return checkpoint.parked or self._kill
    return bool(self.__dict__.get("_is_paused", False))


def _is_paused_set(self: association.Association, value: bool) -> None:
    # The reactor's own writes are kept (for stock checkpoints, and after remove(): the
    # instance attribute is what stock reads once the property is gone) but no longer decide.
    self.__dict__["_is_paused"] = value


def _owners() -> dict[str, Any]:
    return {"Association": association.Association}


def installed() -> bool:
    """Whether associations created now get the race-free checkpoint."""
    return hasattr(association.Association.__init__, _STOCK)


def install() -> bool:
    """Give associations created from now on the race-free checkpoint; False (and a warning) when
    the guard refuses (pynetdicom then runs stock). Idempotent."""
    if installed():
        return True
    if not pynetdicom_guard.allowed("reactor checkpoint fix", _owners(), STOCK_SOURCE_SHA256):
        return False
    stock_init = association.Association.__init__

    @functools.wraps(stock_init)
    def __init__(self: association.Association, *args: Any, **kwargs: Any) -> None:
        stock_init(self, *args, **kwargs)
        self._reactor_checkpoint = ReactorCheckpoint()  # type: ignore[assignment]

    setattr(__init__, _STOCK, stock_init)
    association.Association.__init__ = __init__  # type: ignore[method-assign]
    association.Association._is_paused = property(_is_paused_get, _is_paused_set)  # type: ignore[assignment]
    return True


def remove() -> None:
    """Back to stock pynetdicom for associations created from now on."""
    stock_init = getattr(association.Association.__init__, _STOCK, None)
    if stock_init is None:
        return
    association.Association.__init__ = stock_init  # type: ignore[method-assign]
    delattr(association.Association, "_is_paused")
