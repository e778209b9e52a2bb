"""edge_gateway.pynetdicom_fast_path: install/remove, the guard (version, sources, platform),
the config switch, and the pyproject range matching what the guard accepts."""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import association, dul, transport
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import StorageServiceClass

from edge_gateway import pynetdicom_fast_path, pynetdicom_guard, reactor_waits, store_responses
from edge_gateway.config import load
from edge_gateway.receiver import tune_pynetdicom

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def stock_after() -> Iterator[None]:
    pynetdicom_fast_path.remove()
    yield
    pynetdicom_fast_path.remove()


def _stock() -> bool:
    return (
        StorageServiceClass.SCP is not store_responses._storage_scp
        and transport.AssociationSocket.recv is not reactor_waits._recv
        and not isinstance(vars(dul)["time"], reactor_waits._ReactorTime)
        and not isinstance(vars(association)["time"], reactor_waits._ReactorTime)
    )


def test_importing_changes_nothing_and_remove_restores_stock() -> None:
    assert _stock()
    assert pynetdicom_fast_path.install()
    assert StorageServiceClass.SCP is store_responses._storage_scp
    assert transport.AssociationSocket.recv is reactor_waits._recv
    pynetdicom_fast_path.remove()
    assert _stock()


def test_the_recorded_sources_are_the_installed_pynetdicoms() -> None:
    """Fails when pynetdicom changes: a new version needs a review of the fast path first."""
    assert pynetdicom_guard.version_supported()
    owners = pynetdicom_fast_path.owners()
    assert pynetdicom_guard.mismatches(owners, pynetdicom_fast_path.STOCK_SOURCE_SHA256) == []


def test_a_renamed_method_leaves_stock_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a pynetdicom whose SCP method is gone (renamed upstream)
    monkeypatch.delattr(StorageServiceClass, "SCP")
    with caplog.at_level(logging.WARNING):
        # WHEN the gateway tunes pynetdicom
        installed = tune_pynetdicom(fast_path=True)
    # THEN nothing is installed, nothing raised, and the warning names the method
    assert installed is False and not pynetdicom_fast_path.installed()
    assert "StorageServiceClass.SCP" in caplog.text and "runs stock" in caplog.text


def test_another_version_leaves_stock(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with caplog.at_level(logging.WARNING):
        assert pynetdicom_fast_path.install() is False
    assert "3.1.0" in caplog.text and _stock()


def test_without_eventfd_the_reactors_keep_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom_fast_path, "event_waits_available", lambda: False)
    assert pynetdicom_fast_path.install()
    assert not isinstance(vars(dul)["time"], reactor_waits._ReactorTime)
    assert StorageServiceClass.SCP is store_responses._storage_scp


def test_config_switch_runs_stock(tmp_path: Path) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text('[gateway]\nbucket = "b"\nfast_path = false\n')
    assert load(config_file, environ={}).fast_path is False
    assert load(None, {"bucket": "b"}, environ={"EDGE_GATEWAY_FAST_PATH": "false"}).fast_path is False
    assert load(None, {"bucket": "b", "fast_path": "true"}, environ={}).fast_path is True
    assert pynetdicom_fast_path.install()
    assert tune_pynetdicom(fast_path=False) is False
    assert _stock()


def test_pyproject_accepts_exactly_what_the_guard_accepts() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [spec] = [d for d in project["dependencies"] if d.startswith("pynetdicom")]
    low, high = pynetdicom_guard.SUPPORTED
    assert re.sub(r"\s", "", spec) == f"pynetdicom>={low},<{high}"


def test_error_comment_is_packed_as_pynetdicom_encodes_it() -> None:
    # GIVEN the response stock pynetdicom sends for a handler's status Dataset with ErrorComment
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.3"
    rsp.Status = 0xC210
    rsp.ErrorComment = "UID too long"
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(1, 16384))
    [(_context, pdv)] = pdata.presentation_data_value_list
    # THEN the packed response is the same bytes; a success carries no comment
    packed = store_responses.store_response("1.2.840.10008.5.1.4.1.1.2", "1.2.3", 7, 0xC210, "UID too long")
    assert packed == pdv[1:]
    assert b"\x02\x09" not in store_responses.store_response("1.2", "1.2.3", 7, 0, "ignored")
