"""StopSignals: a stop signal that lands while the main thread holds a lock is never a hang."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from edge_gateway.stop_signals import StopSignals

# The signal is delivered inside ``with event._cond`` (the lock Event.wait holds around its
# checks), the interleaving that hung a receiver process: its handler then runs with the lock held.
HARNESS = textwrap.dedent(
    """
    import os, signal, sys, threading
    from edge_gateway.stop_signals import StopSignals

    event = threading.Event()
    if sys.argv[1] == "stop_signals":
        signals = StopSignals(signal.SIGTERM)
    else:  # the pattern it replaces: the handler sets the Event the main thread waits on
        signal.signal(signal.SIGTERM, lambda *_: event.set())
    with event._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes: the handler runs here, with the lock held
            pass
    if sys.argv[1] == "stop_signals":
        assert signals.wait(60, also=event) and signals.received == [signal.SIGTERM]
    print("stopped")
    """
)


def run_harness(variant: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The harness in a fresh interpreter; TimeoutExpired (the process killed) when it hangs."""
    return subprocess.run(
        [sys.executable, "-c", HARNESS, variant], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_signal_while_the_main_thread_holds_the_waited_events_lock_stops_it() -> None:
    done = run_harness("stop_signals")
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr


def test_the_harness_reproduces_the_hang_of_a_handler_that_sets_an_event() -> None:
    # The same interleaving with ``handler: event.set()``: the process never gets past it.
    with pytest.raises(subprocess.TimeoutExpired):
        run_harness("event_set", timeout=5)


def test_wait_returns_false_after_its_time_and_true_once_the_other_event_is_set() -> None:
    signals = StopSignals()
    other = threading.Event()
    assert signals.wait(0.01, also=other) is False
    other.set()
    assert signals.wait(None, also=other) is True
