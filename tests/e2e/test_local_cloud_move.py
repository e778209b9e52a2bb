"""`local-cloud run --known-aet` makes a C-MOVE from `make run`'s own gateway work.

Without it the gateway knew no destination: every movescu got 0xA801 (move destination unknown).
The CLI runs as `make run` runs it, a separate process; the destination is a pynetdicom
Storage SCP, the C-MOVE a real association.
"""

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
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
)

from local_cloud.stack import free_port
from tests.e2e.conftest import wait_for
from tests.helpers.dcmtk import store_with_dcmtk
from tests.helpers.dicom_factory import series_from, write_series
from tests.helpers.processes import stop_process

pytestmark = pytest.mark.e2e


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback
            return int(reply.status)
    except OSError:
        return 0


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def destination() -> Iterator[tuple[int, list[str]]]:
    """A Storage SCP titled DEST: its port and the SOP Instance UIDs it received."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield port, received
    finally:
        server.shutdown()


def test_movescu_to_a_known_aet_given_on_the_cli(destination: tuple[int, list[str]], tmp_path: Path) -> None:
    dest_port, received = destination
    ports = {name: free_port() for name in ("moto", "api", "dicom")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGE_GATEWAY_"))}
    log = tmp_path / "local-cloud.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "local_cloud", "run",
                "--moto-port", str(ports["moto"]), "--api-port", str(ports["api"]),
                "--dicom-port", str(ports["dicom"]), "--stable-after", "1",
                "--data-dir", str(tmp_path / "run"), "--no-viewer", "--no-persist",
                "--known-aet", f"DEST=127.0.0.1:{dest_port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    api = f"http://127.0.0.1:{ports['api']}"
    try:
        wait_for(
            lambda: _listening(ports["dicom"]) or process.poll() is not None, 90, "the gateway to listen"
        )
        assert process.poll() is None, log.read_text()
        series = series_from("CT_small.dcm", 2)
        study = series[0].StudyInstanceUID
        store_with_dcmtk(ports["dicom"], write_series(tmp_path / "in", series))
        wait_for(
            lambda: (
                _status(f"{api}/dicomweb/studies/{study}/series/{series[0].SeriesInstanceUID}/instances")
                == 200
            ),
            90,
            "the series indexed",
        )

        ae = AE(ae_title="MOVER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", ports["dicom"], ae_title="EDGE")
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study
        try:
            statuses = [
                int(s.Status)
                for s, _ in assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove)
            ]
        finally:
            assoc.release()
    finally:
        stop_process(process, signal.SIGINT)
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]  # 0xA801 before --known-aet
    assert sorted(received) == sorted(str(ds.SOPInstanceUID) for ds in series)
