"""Extra receiver processes for the DICOM port; they only write to the spool.

pynetdicom's C-STORE path runs under the GIL, so one process tops out whatever the
number of associations. With ``receivers = N`` the coordinator accepts every
connection and serves it itself or hands it to one of N-1 receiver processes,
whichever has the fewest open associations (``dispatch.py``). A receiver does
nothing but the C-STORE path (peek UIDs, write, fsync, link into the series
folder), which is safe across processes: the series folder is flocked and closed
by rename. The coordinator finds their instances on disk (series sizes are read
from the folder) and publishes the spool usage in ``usage.json`` for their limit
checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
from dataclasses import replace
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess

from edge_gateway import receiver
from edge_gateway.config import GatewayConfig
from edge_gateway.dispatch import ConnectionDispatcher, Handoff
from edge_gateway.logs import configure_logging
from edge_gateway.spool import Spool
from edge_gateway.stop_signals import StopSignals

log = logging.getLogger(__name__)
USAGE_EVERY = 2.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the coordinator dies (even by kill -9), never linger as an orphan."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def receiver_main(config: GatewayConfig, parent_pid: int, channel: socket.socket) -> None:
    """Entry point of a receiver process: serve the connections the coordinator hands over ``channel``."""
    # Ctrl-C reaches the terminal's whole process group: the coordinator decides. SIGINT arrived
    # blocked (``ReceiverPool._spawn``); ignoring it discards one sent while this process started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent()
    if os.getppid() != parent_pid:  # the coordinator died before prctl took effect
        return
    configure_logging(config)
    signals = StopSignals(signal.SIGTERM)  # the pool's stop, or the coordinator's death (prctl)
    handoff = Handoff(channel)
    spool = Spool(config.spool_dir, config.max_spool_bytes)
    ae, _server = receiver.start(config, spool, lambda *_: None, handoff=handoff)
    while not signals.wait(USAGE_EVERY, also=handoff.done):
        spool.adopt_usage()
    handoff.done.set()
    ae.shutdown()


class ReceiverPool:
    """The extra receiver processes (``receivers = N``): started, restarted when one dies, stopped."""

    def __init__(self, config: GatewayConfig, count: int, dispatcher: ConnectionDispatcher) -> None:
        self._config = config
        self._count = count
        self._dispatcher = dispatcher
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess] = []
        self._stopping = False

    def start(self) -> None:
        """Start ``count`` receiver processes."""
        for _ in range(self._count):
            self._processes.append(self._spawn())
        log.info(
            "%d processes serve port %d: this one and %d receiver process%s (receivers = %d)",
            self._count + 1,
            self._config.port,
            self._count,
            "" if self._count == 1 else "es",
            self._config.receivers,
        )

    def _spawn(self) -> BaseProcess:
        channel = self._dispatcher.attach()
        process = self._context.Process(
            target=receiver_main, args=(self._config, os.getpid(), channel), name="edge-receiver", daemon=True
        )
        # The child starts with SIGINT blocked (the mask survives fork and exec): a Ctrl-C while
        # it imports would kill it with a KeyboardInterrupt traceback. receiver_main ignores
        # SIGINT, then unblocks it. multiprocessing's resource tracker starts with the first
        # spawn and unblocks SIGINT in the caller after starting itself: start it first.
        resource_tracker.ensure_running()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        channel.close()  # the child has its own descriptor now
        return process

    def check(self) -> None:
        """Replace receiver processes that died (a crash in pynetdicom must not shrink the pool)."""
        for index, process in enumerate(self._processes):
            if not self._stopping and not process.is_alive():
                log.error(
                    "receiver process %s exited with %s; starting a new one", process.pid, process.exitcode
                )
                self._processes[index] = self._spawn()

    @property
    def pids(self) -> list[int]:
        """Process IDs of the receivers alive now."""
        return [p.pid for p in self._processes if p.pid is not None and p.is_alive()]

    def stop(self) -> None:
        """Terminate every receiver and wait for it to end."""
        self._stopping = True
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()


def pool_for(config: GatewayConfig, port: int, dispatcher: ConnectionDispatcher) -> ReceiverPool:
    """N-1 extra receivers for the port the coordinator actually bound (port 0 picks one)."""
    return ReceiverPool(replace(config, port=port), config.receiver_processes - 1, dispatcher)
