"""The README's first screen, as written, on a fresh clone: ``make run``, send a folder, look,
Ctrl-C, ``make run`` again at once, the studies are still there.

The clone reuses this checkout's ``.venv`` through a symlink (creating one takes minutes), so
the Python code that runs is this checkout's (installed editable); the clone contributes the
Makefile, the README and a working directory without ``.local-run``. The ports are free ones,
given through ``RUN_ARGS`` and swapped into the README's commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local_cloud.stack import free_port
from tests.conftest import require_tool
from tests.e2e.conftest import OUTPUT, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def readme_blocks() -> list[str]:
    """The README's ``sh`` code blocks, in order."""
    return re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)


@dataclass
class Clone:
    path: Path
    ports: dict[str, int]

    def localize(self, command: str) -> str:
        """A README command with this test's ports in place of the defaults."""
        command = command.replace("127.0.0.1 11112", f"127.0.0.1 {self.ports['dicom']}")
        command = command.replace("127.0.0.1:3000", f"127.0.0.1:{self.ports['api']}")
        return command.replace("127.0.0.1:5000", f"127.0.0.1:{self.ports['moto']}")

    def make_run(self) -> str:
        (run,) = [line for line in readme_blocks()[0].splitlines() if line.startswith("make run")]
        command = run.split("#")[0].strip()
        assert command == "make run"
        ports = self.ports
        return (
            f'{command} RUN_ARGS="--moto-port {ports["moto"]} --api-port {ports["api"]} '
            f'--dicom-port {ports["dicom"]} --viewer-port 0"'  # 0: any free port, never 3001
        )

    def studies(self) -> set[str]:
        url = f"http://127.0.0.1:{self.ports['api']}/dicomweb/studies?limit=1000"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
        return {study["0020000D"]["Value"][0] for study in json.loads(body)} if body else set()

    def gateway_status(self) -> dict[str, Any]:
        done = subprocess.run(
            [".venv/bin/edge-gateway", "status", "--json"],
            cwd=self.path,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Clone]:
    require_tool(shutil.which("dcmsend") is not None and shutil.which("make") is not None, "dcmtk and make")
    require_tool((REPO / ".venv" / ".installed").exists(), "this checkout's .venv (make venv)")
    require_tool((REPO / ".git").exists(), "a git checkout to clone")
    path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True, timeout=120)
    (path / ".venv").symlink_to(REPO / ".venv")
    # The shared .venv is up to date: make must not reinstall it (pointing it at this clone).
    for dependency in ("pyproject.toml", "constraints.txt"):
        os.utime(path / dependency, (0, 0))
    yield Clone(path, {name: free_port() for name in ("moto", "api", "dicom")})


def terminal_env() -> dict[str, str]:
    """This environment without make's own variables: under ``make test`` (CI) a ``make`` started
    here would be a sub-make, which prints "Leaving directory" after the run's last line."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}


class MakeRun:
    """``make run`` in its own process group, as a terminal runs it; Ctrl-C is SIGINT to the group."""

    def __init__(self, clone: Clone, log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", clone.make_run()],
                cwd=clone.path,
                env=terminal_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: "\nReady." in self.text() or self.process.poll() is not None, 180, "make run")
        assert self.process.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ctrl_c(self) -> str:
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=120)
        return self.text()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def settled(clone: Clone) -> set[str] | None:
    """The studies once the gateway holds nothing and the index stopped growing."""
    status = clone.gateway_status()
    if status["open_series"] or status["parts_to_zip"] or status["outbox_parts"]:
        return None
    before = clone.studies()
    time.sleep(3)  # a part uploaded just now is ingested within a second or two
    after = clone.studies()
    return after if after == before and after else None


def test_readme_first_screen_on_a_fresh_clone(clone: Clone) -> None:
    OUTPUT.mkdir(exist_ok=True)
    first = MakeRun(clone, OUTPUT / "first-screen-run-1.log")
    try:
        # WHEN the README's second block runs as written (ports aside): send a folder, import it,
        # ask the gateway; then, once the series closed and were ingested, query
        lines = clone.localize(readme_blocks()[1]).splitlines()
        queries = [line for line in lines if line.startswith("curl ")]
        assert queries, "the README's first screen has no query"
        done = subprocess.run(
            ["bash", "-e", "-c", "\n".join(line for line in lines if line not in queries)],
            cwd=clone.path,
            env=terminal_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        (OUTPUT / "first-screen-commands.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-3000:]
        # THEN the folder's files that are not DICOM were skipped with a message, the rest sent
        assert "bad DICOM file" in done.stderr  # dcmsend, -nh: goes on past them
        assert "skipped" in done.stdout  # edge-gateway import
        assert "state: running" in done.stdout  # edge-gateway status found make run's gateway
        studies = wait_for(lambda: settled(clone), 180, "the folder's studies in the index")
        # pydicom's test files hold ~30 studies, compressed ones among them
        assert len(studies) >= 20
        for query in queries:
            answered = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", query],
                cwd=clone.path,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert all(uid in answered.stdout for uid in studies)
        # AND the console has one line per event: no EMF blobs, no pydicom warnings, no tracebacks
        console = first.text()
        assert '{"_aws"' not in console
        assert "UserWarning" not in console
        assert "Traceback" not in console

        # WHEN Ctrl-C stops it
        stopped = first.ctrl_c()
    finally:
        first.kill()
    # THEN it ends with a clean line, having saved the bucket and index
    assert "Traceback" not in stopped and "cannot read the ingest queue" not in stopped
    assert stopped.rstrip().splitlines()[-1].startswith("stopped; data kept in .local-run")

    # WHEN `make run` is started again at once
    second = MakeRun(clone, OUTPUT / "first-screen-run-2.log")
    try:
        # THEN every study is still there, and its headers (read from the restored S3 objects)
        assert clone.studies() == studies
        study = sorted(studies)[0]
        url = f"http://127.0.0.1:{clone.ports['api']}/dicomweb/studies/{study}/metadata"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and json.loads(response.read())
        assert "loaded the saved bucket and index" in second.text()
        stopped = second.ctrl_c()
    finally:
        second.kill()
    assert "Traceback" not in stopped
