"""Waiting for SIGTERM / SIGINT in the main thread without a lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock. The usual ``handler: event.set()`` with ``while not event.wait(t)`` in
the main thread deadlocks when the signal lands while ``wait`` holds the Event's internal
lock: ``set`` waits for it forever (cpython#126434). A receiver process was found hung that
way after its coordinator's ``kill -9`` (PR_SET_PDEATHSIG's SIGTERM), outliving it. Here the
handler only appends to a list, which takes no lock; the main thread polls it.
"""

from __future__ import annotations

import signal
import threading
import time

POLL = 0.2  # seconds between looks at the received signals (the longest delay before a stop)


class StopSignals:
    """Records the given signals from the moment it is created (their handlers are replaced)."""

    def __init__(self, *signums: signal.Signals) -> None:
        self.received: list[int] = []
        for signum in signums:
            signal.signal(signum, self._record)

    def _record(self, signum: int, _frame: object) -> None:
        self.received.append(signum)  # no lock: see the module docstring

    def wait(self, seconds: float | None = None, also: threading.Event | None = None) -> bool:
        """True as soon as a signal was received (or ``also`` is set), False after ``seconds``
        (None: no limit). Call it from the main thread only, as Python runs handlers there."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.received and not (also is not None and also.is_set()):
            left = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True
