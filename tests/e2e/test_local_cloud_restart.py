"""The local stand-in across restarts: Ctrl-C keeps the studies; after a kill, moto goes too, the
next start says what was lost, and sending those files again ships them again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_cloud.stack import free_port
from tests.e2e.conftest import OUTPUT, wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.pipeline import send

pytestmark = pytest.mark.e2e


class Run:
    """``local-cloud run`` in its own process group, as a terminal runs it."""

    def __init__(self, data_dir: Path, ports: dict[str, int], log: Path) -> None:
        self.ports, self.log = ports, log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "local_cloud",
                    "run",
                    *("--moto-port", str(ports["moto"]), "--api-port", str(ports["api"])),
                    *("--dicom-port", str(ports["dicom"]), "--stable-after", "1"),
                    *("--viewer-port", "0"),  # any free port: a fixed 3001 collides with another run
                    *("--data-dir", str(data_dir)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_for(lambda: "\nReady." in self.text() or self.process.poll() is not None, 120, "the stand-in")
        assert self.process.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def has_study(self, study: str) -> bool:
        # The list, not ?StudyInstanceUID=: that one answers 500 while the study is being ingested
        # (query.store.get_studies, reported to the lead).
        url = f"http://127.0.0.1:{self.ports['api']}/dicomweb/studies?limit=1000"
        with urllib.request.urlopen(url, timeout=30) as response:
            return study in response.read().decode()

    def stop(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=120)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop(signal.SIGKILL)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_keeps_the_studies_and_a_kill_is_recovered_by_sending_again(
    tmp_path: Path, runs: list[Run]
) -> None:
    OUTPUT.mkdir(exist_ok=True)
    ports = {name: free_port() for name in ("moto", "api", "dicom")}
    data_dir = tmp_path / "local-run"

    def start(name: str) -> Run:
        runs.append(Run(data_dir, ports, OUTPUT / f"restart-{name}.log"))
        return runs[-1]

    # GIVEN a study sent to a stand-in that is then stopped with Ctrl-C
    first = start("1")
    kept = series_from("CT_small.dcm", 2)
    assert send(ports["dicom"], kept) == [0, 0]
    wait_for(lambda: first.has_study(kept[0].StudyInstanceUID), 60, "the first study")
    first.stop(signal.SIGINT)
    assert "Traceback" not in first.text()

    # WHEN it starts again at once THEN the study is there
    second = start("2")
    assert second.has_study(kept[0].StudyInstanceUID)

    # GIVEN a second study, then the stand-in killed (no Ctrl-C, nothing saved)
    lost = series_from("MR_small.dcm", 2)
    assert send(ports["dicom"], lost) == [0, 0]
    wait_for(lambda: second.has_study(lost[0].StudyInstanceUID), 60, "the second study")
    second.stop(signal.SIGKILL)
    # THEN its moto server (own process group, so the kill missed it) ends with it
    wait_for(lambda: not listening(ports["moto"]), 30, "moto to end with its parent")

    # WHEN it starts again
    third = start("3")
    # THEN it says the last run was not stopped cleanly, has the first study but not the second
    assert "was not stopped with Ctrl-C" in third.text()
    assert third.has_study(kept[0].StudyInstanceUID)
    assert not third.has_study(lost[0].StudyInstanceUID)
    # AND sending the second again ships it again (the gateway forgot it had shipped it)
    assert send(ports["dicom"], lost) == [0, 0]
    wait_for(lambda: third.has_study(lost[0].StudyInstanceUID), 60, "the second study, sent again")
    third.stop(signal.SIGINT)
    assert third.text().rstrip().splitlines()[-1].startswith("stopped; data kept in")
