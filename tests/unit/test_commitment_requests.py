"""edge_gateway.storage_commitment.CommitmentRequests: who sends a report (claims), whether the
requester's association is still open (markers), and what survives a process that died."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge_gateway.spool import TMP
from edge_gateway.storage_commitment import CommitmentRequests, Reference, build_report


def _requests(root: Path) -> CommitmentRequests:
    (root / TMP).mkdir(parents=True, exist_ok=True)  # the spool's own temporary folder
    return CommitmentRequests(root)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_one_claim_wins_and_a_claim_can_be_given_back(tmp_path: Path) -> None:
    requests = _requests(tmp_path)
    path = requests.add("1.2.3", "PACS", [Reference("1.2.840.10008.5.1.4.1.1.2", "1.2.4")], 60)
    claimed = requests.claim(path)
    assert claimed is not None and claimed.exists()
    assert requests.claim(path) is None  # the other sender finds it gone
    assert requests.pending() == []
    assert requests.unclaim(claimed) == path
    assert requests.pending() == [path]


def test_the_claim_of_a_dead_process_is_recovered_a_live_one_is_not(tmp_path: Path) -> None:
    requests = _requests(tmp_path)
    mine = requests.claim(requests.add("1.2.3", "PACS", [], 60))
    other = requests.add("1.2.5", "PACS", [], 60)
    dead = other.rename(other.with_name(f"{other.name}.claimed-{_dead_pid()}"))
    requests.recover()
    assert requests.pending() == [other]
    assert mine is not None and mine.exists()
    assert not dead.exists()


def test_an_association_is_open_while_its_marker_is_and_its_process_lives(tmp_path: Path) -> None:
    requests = _requests(tmp_path)
    token = requests.open_token()
    assert token.startswith(f"{os.getpid()}-")
    assert requests.is_open(token)
    requests.close_token(token)
    assert not requests.is_open(token)
    assert not requests.is_open("")
    stale = f"{_dead_pid()}-abc"
    (tmp_path / "commitments" / "open" / stale).touch()
    assert not requests.is_open(stale)  # and the marker is removed
    assert not (tmp_path / "commitments" / "open" / stale).exists()
    live = requests.open_token()
    requests.forget_open()  # at start: no association of an earlier run is open
    assert not requests.is_open(live)


def test_report_event_types_and_failure_reasons() -> None:
    done = Reference("1.2.840.10008.5.1.4.1.1.2", "1.2.4", committed=True)
    missing = Reference("1.2.840.10008.5.1.4.1.1.2", "1.2.5", failure=0x0112)
    event_type, report = build_report("EDGE", "1.2.3", [done])
    assert event_type == 1 and "FailedSOPSequence" not in report
    event_type, report = build_report("EDGE", "1.2.3", [done, missing])
    assert event_type == 2
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == ["1.2.4"]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] == [
        ("1.2.5", 0x0112)
    ]
    assert report.TransactionUID == "1.2.3" and report.RetrieveAETitle == "EDGE"
