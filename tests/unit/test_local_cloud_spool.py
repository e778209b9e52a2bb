"""Starting the local stand-in again: shipped records of earlier runs go, taken ports are named."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edge_gateway.shipped import ShippedRecord
from edge_gateway.spool import SHIPPED, Spool
from local_cloud.stack import PortInUse, check_ports_free, forget_earlier_shipments


def test_records_of_earlier_runs_are_forgotten_and_unfinished_work_kept(tmp_path: Path) -> None:
    # GIVEN a spool from an earlier run: two series recorded as shipped, one instance not yet shipped
    spool = Spool(tmp_path / "spool", 10**9)
    record = ShippedRecord(spool.path(SHIPPED), retention_seconds=3600)
    record.add("1.2.3.1", {"1.2.3.1.1": "0" * 64})
    record.add("1.2.3.2", {"1.2.3.2.1": "0" * 64})
    assert spool.store("1.2.3", "1.2.3.3", "1.2.3.3.1", b"DICOM bytes")
    # WHEN the stand-in starts again
    forgotten = forget_earlier_shipments(tmp_path / "spool")
    # THEN the records are gone (a re-sent instance is shipped to the new, empty bucket) ...
    assert forgotten == 2
    assert record.shipped("1.2.3.1") == set()
    # ... and the instance that was never shipped is still in its open series
    assert [s.series_uid for s in spool.open_series()] == ["1.2.3.3"]


def test_a_first_run_without_a_spool_forgets_nothing(tmp_path: Path) -> None:
    assert forget_earlier_shipments(tmp_path / "no-spool-yet") == 0


def test_a_taken_port_is_named_before_anything_starts() -> None:
    # GIVEN a port held by someone else (as when a second `make run` starts)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # WHEN the stand-in checks its ports
        with pytest.raises(PortInUse) as caught:
            check_ports_free("127.0.0.1", {"moto": 0, "API": port})
    # THEN the error names the role and the port
    assert f"API port 127.0.0.1:{port} is in use" in str(caught.value)
