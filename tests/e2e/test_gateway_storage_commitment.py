"""Storage commitment (push model) against a gateway process, with kill -9 between request and report.

A PACS (pynetdicom, real associations) stores a series to the gateway, asks for
commitment of it plus one instance the gateway never received, and listens for the
N-EVENT-REPORT. The gateway is killed right after accepting the N-ACTION; after a
restart it ships the series, the stand-in indexes it, and the report arrives on a new
association: three committed, one failed with 0x0112.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from local_cloud.stack import LocalCloudConfig, free_port
from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dcmtk import store_with_dcmtk
from tests.helpers.dicom_factory import series_from, write_series
from tests.helpers.gateway_helpers import GatewayProcess, gateway_env, write_config

pytestmark = pytest.mark.e2e

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def commitment_gateway(
    stack: Stack, tmp_path: Path, pacs_port: int, permissions: str, **settings: Any
) -> tuple[GatewayProcess, int]:
    """A gateway process (not started yet) on a free port answering Storage Commitment for
    the PACS ``PACSC`` listening on ``pacs_port``; ``permissions``: PACSC's DIMSE permissions."""
    port = free_port()
    config = write_config(
        tmp_path / "gateway.toml",
        host="127.0.0.1",
        port=port,
        ae_title="EDGE",
        spool_dir=str(tmp_path / "spool"),
        bucket=stack.bucket,
        region="us-east-1",
        endpoint_url=stack.moto,
        gateway_id="commit-edge",
        table_name=LocalCloudConfig().table,
        known_aets=[f"PACSC=127.0.0.1:{pacs_port}"],
        dimse_permissions=[f"PACSC: {permissions}"],
        **settings,
    )
    return GatewayProcess(config, tmp_path / "gateway.log", port), port


def request_commitment(port: int, request: Dataset) -> int:
    """N-ACTION ``request`` as PACSC on an association it releases at once: the status."""
    ae = AE(ae_title="PACSC")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE")
    assert assoc.is_established
    status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    assoc.release()
    return int(status.Status)


def test_commitment_report_after_kill_9(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a PACS listening for N-EVENT-REPORTs
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.put((int(event.event_type), event.event_information))
        return 0x0000, None

    pacs = AE(ae_title="PACSC")
    pacs.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = pacs.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    pacs_port = server.server_address[1]
    # AND a gateway that knows where the PACS listens
    spool = tmp_path / "spool"
    gateway, port = commitment_gateway(stack, tmp_path, pacs_port, "commit find", stable_after=1.0)
    gateway.start()
    try:
        # WHEN the PACS stores a series and requests commitment for it and one unknown instance
        series = series_from("CT_small.dcm", 3)
        sender = AE(ae_title="PACSC")
        sender.acse_timeout = sender.dimse_timeout = sender.network_timeout = 20
        sender.add_requested_context(StorageCommitmentPushModel)
        same_association: list[Any] = []

        def on_same_association(event: evt.Event) -> tuple[int, None]:
            same_association.append(event)
            return 0x0000, None

        # dcmtk sends (pynetdicom's requestor can lose a C-STORE-RSP under load: issue 11)
        store_with_dcmtk(port, write_series(tmp_path / "series", series))
        assoc = sender.associate(
            "127.0.0.1",
            port,
            ae_title="EDGE",
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_same_association)],
        )
        assert assoc.is_established
        request = Dataset()
        request.TransactionUID = generate_uid()
        request.ReferencedSOPSequence = []
        unknown = generate_uid()
        for sop_class, sop_uid in [(ds.SOPClassUID, ds.SOPInstanceUID) for ds in series] + [
            (series[0].SOPClassUID, unknown)
        ]:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_uid
            request.ReferencedSOPSequence.append(item)
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        assert int(status.Status) == 0x0000
        # AND the gateway is killed before it could report (the requester's association, kept
        # open, goes with it: its marker must not make the restarted gateway wait for it)
        gateway.kill9()
        wait_for(lambda: not assoc.is_established, 30, "the association to drop")
        assert len(list((spool / "commitments").glob("*.json"))) == 1

        # THEN after a restart the report comes on a new association: 3 committed, 1 failed (0x0112)
        gateway.start()
        event_type, info = reports.get(timeout=90)
        assert event_type == 2
        assert info.TransactionUID == request.TransactionUID
        assert same_association == []
        assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(
            ds.SOPInstanceUID for ds in series
        )
        [failed] = info.FailedSOPSequence
        assert failed.ReferencedSOPInstanceUID == unknown
        assert failed.FailureReason == 0x0112
        # AND the request is gone from the spool, and status shows the activity
        wait_for(lambda: not list((spool / "commitments").glob("*.json")), 30, "the request to be removed")
        status_run = subprocess.run(
            [sys.executable, "-m", "edge_gateway", "status", "--config", str(gateway.config), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=gateway_env(),
            check=True,
        )
        shown: dict[str, Any] = json.loads(status_run.stdout)
        assert shown["commitments_pending"] == 0
        assert shown["commit_requests"] == 1
        assert shown["commit_instances"] == 4

        # WHEN the PACS asks again, long after the series was shipped
        again = Dataset()
        again.TransactionUID = generate_uid()
        again.ReferencedSOPSequence = request.ReferencedSOPSequence[:3]
        assert request_commitment(port, again) == 0x0000
        # THEN the index still answers it: every instance committed (event type 1)
        event_type, info = reports.get(timeout=60)
        assert event_type == 1
        assert info.TransactionUID == again.TransactionUID
        assert len(info.ReferencedSOPSequence) == 3
        assert "FailedSOPSequence" not in info
    finally:
        gateway.stop()
        server.shutdown()


def test_commitment_refused_for_a_requester_without_permission(stack: Stack, tmp_path: Path) -> None:
    gateway, port = commitment_gateway(stack, tmp_path, 104, "find")
    gateway.start()
    try:
        request = Dataset()
        request.TransactionUID = generate_uid()
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = generate_uid()
        request.ReferencedSOPSequence = [item]
        status = request_commitment(port, request)
    finally:
        gateway.stop()
    assert status == 0x0124
    assert not list((tmp_path / "spool" / "commitments").glob("*.json"))


def test_report_on_the_requesters_open_association_else_on_a_new_one(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a PACS that listens for reports on new associations, and a gateway that knows it
    on_new: queue.Queue[str] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        on_new.put(str(event.event_information.TransactionUID))
        return 0x0000, None

    pacs = AE(ae_title="PACSC")
    pacs.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = pacs.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    gateway, port = commitment_gateway(stack, tmp_path, server.server_address[1], "commit", stable_after=1.0)
    gateway.start()
    try:
        series = series_from("CT_small.dcm", 2)
        store_with_dcmtk(port, write_series(tmp_path / "series", series))

        def request_for(instances: list[Dataset]) -> Dataset:
            request = Dataset()
            request.TransactionUID = generate_uid()
            request.ReferencedSOPSequence = []
            for ds in instances:
                item = Dataset()
                item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
                request.ReferencedSOPSequence.append(item)
            return request

        # WHEN one requester keeps its association open and handles N-EVENT-REPORT on it
        on_same: queue.Queue[tuple[int, Dataset]] = queue.Queue()

        def on_same_report(event: evt.Event) -> tuple[int, None]:
            on_same.put((int(event.event_type), event.event_information))
            return 0x0000, None

        kept_ae = AE(ae_title="PACSC")
        kept_ae.acse_timeout = kept_ae.dimse_timeout = 20
        kept_ae.network_timeout = 300  # idle while the series is shipped and indexed
        kept_ae.add_requested_context(StorageCommitmentPushModel)
        kept = kept_ae.associate(
            "127.0.0.1", port, ae_title="EDGE", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_same_report)]
        )
        assert kept.is_established
        first = request_for(series)
        status, _ = kept.send_n_action(first, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        assert int(status.Status) == 0x0000
        # AND another asks for the same instances and releases its association at once
        second = request_for(series)
        assert request_commitment(port, second) == 0x0000

        # THEN the first report comes on the open association (PS3.4 J.3.3), both committed
        event_type, info = on_same.get(timeout=120)
        assert event_type == 1
        assert info.TransactionUID == first.TransactionUID
        assert len(info.ReferencedSOPSequence) == 2
        assert kept.is_established
        # AND the second on a new association to the PACS's address
        assert on_new.get(timeout=60) == second.TransactionUID
        kept.release()
        # AND each report was sent once, and no request is left
        folder = tmp_path / "spool" / "commitments"
        wait_for(lambda: not [*folder.glob("*.json"), *folder.glob("*.claimed-*")], 30, "the requests to go")
        assert on_same.empty() and on_new.empty()
    finally:
        gateway.stop()
        server.shutdown()
