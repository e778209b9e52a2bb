"""Storage Commitment Push Model SCP (PS3.4 Annex J): the cloud takes responsibility, visibly.

1. N-ACTION (Request Storage Commitment, action type 1) from a permitted AE whose
   address is in ``known_aets``: each referenced instance is located in the spool
   (open series, parts, outbox; shipped ones by the shipped record and the series -> study
   map the coordinator keeps) to learn its study and series, the request is
   written durably to ``<spool>/commitments/`` and answered 0x0000 at once.
2. The coordinator's ``CommitmentWorker`` checks pending requests every few
   seconds. An instance is committed only when its index item exists (ingest
   indexed it, with the same SOP Class UID) *and* its part zip is in the bucket.
3. When every instance is committed, or ``commitment_wait`` has passed, the worker
   writes the decision into the request and the N-EVENT-REPORT goes to the requester
   (PS3.4 J.3.3): event type 1 when all succeeded, 2 with a Failed SOP Sequence
   otherwise (PS3.4 J.3.3.1.1 reasons: 0x0112 no such object instance, 0x0110
   processing failure, 0x0119 class/instance conflict).
   - If the requester's association is still established, on that association: the
     process serving it (``SameAssociationReports``) sees the decision and sends it.
     While the association is open, ``commitments/open/<token>`` exists (removed when
     it is released, aborted or closed, and ignored once the owning process is gone).
   - Otherwise on a NEW association to the requester's address in ``known_aets`` (the
     gateway as association requester, SCP role by role selection), from the worker.
   Whoever sends first renames the request to ``*.claimed-<pid>`` (atomic: only one
   can), so a report goes out once; a claim whose process died is given back. The
   request file is deleted only after the report was accepted; until then it is
   retried, also after a restart or ``kill -9``.

No PHI is involved: requests hold UIDs and the requester's AE title only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.uids import uid_problem
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from query.errors import QueryError

from edge_gateway.archive_client import Archive
from edge_gateway.dimse_access import AccessTable
from edge_gateway.spool import OUTBOX, PARTS, SERIES, SHIPPED, TMP, write_durably

if TYPE_CHECKING:
    from edge_gateway.config import GatewayConfig
    from edge_gateway.query_retrieve import Activity

log = logging.getLogger(__name__)

FOLDER = "commitments"
# The well-known SOP Instance UID of the Storage Commitment Push Model (PS3.4 J.3.5).
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_INSTANCE = 0x0112
NOT_AUTHORISED = 0x0124
MISSING_ATTRIBUTE = 0x0120
INVALID_VALUE = 0x0106
NO_SUCH_ACTION = 0x0123
CLASS_INSTANCE_CONFLICT = 0x0119
CHECK_EVERY = 2.0
WATCH_EVERY = 0.2  # how often a serving process looks for decisions to send on open associations
RETRY_REPORT_AFTER = 30.0
OPEN = "open"  # commitments/open/<token>: the requester's association is still established
CLAIMED = ".claimed-"
MAX_REFERENCES = 10_000


def locate_in_spool(spool_root: Path, sop_uid: str) -> tuple[str, str] | None:
    """(study UID, series UID) of an instance this gateway holds or is shipping, else None."""
    name = f"{sop_uid}.dcm"
    for path in (spool_root / SERIES).glob(f"*/*/{name}"):
        return path.parent.parent.name, path.parent.name
    for path in (spool_root / PARTS).glob(f"*/{name}"):
        try:
            part = json.loads((path.parent / "part.json").read_text())
            return str(part["study_uid"]), str(part["series_uid"])
        except (OSError, ValueError, KeyError):
            continue
    for descriptor in (spool_root / OUTBOX).glob("*.json"):
        try:
            data = json.loads(descriptor.read_text())
        except (OSError, ValueError):
            continue
        if sop_uid in data.get("sop_instance_uids", ()):
            return str(data["study_uid"]), str(data["series_uid"])
    return None


def shipped_series(spool_root: Path, sop_uid: str) -> str | None:
    """The series UID of an instance recorded as shipped (the record does not keep the study)."""
    needle = f'"sop": "{sop_uid}"'
    for record in (spool_root / SHIPPED).glob("*.jsonl"):
        try:
            if needle in record.read_text():
                return record.stem
        except OSError:
            continue
    return None


class SeriesStudyMap:
    """Which study each series received here belongs to, remembered past shipping.

    The shipped record keeps SOP Instance UIDs per series but not the study, and the index is
    keyed by study: without this, an instance shipped before its commitment request arrived
    (a PACS that asks after a long study) could not be checked. The coordinator learns every
    open series folder (each stays open at least ``stable_after`` seconds) into an append-only
    file; entries older than the shipped record's retention are dropped when it is rewritten.
    """

    FILE = "series-study.jsonl"

    def __init__(self, spool_root: Path, retention: float) -> None:
        self.root = spool_root
        self.path = spool_root / FOLDER / self.FILE
        self.retention = retention
        self.known: dict[str, tuple[str, float]] = {}
        self._read_at = -1.0

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._read_at:
            return
        self._read_at = mtime
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
                self.known[str(entry["series"])] = (str(entry["study"]), float(entry["at"]))
            except (ValueError, KeyError, TypeError):  # a torn last line after power loss
                continue

    def study_of(self, series_uid: str) -> str | None:
        """The Study Instance UID of a series received here, or None when unknown."""
        self._load()
        found = self.known.get(series_uid)
        return found[0] if found else None

    def learn(self, also: dict[str, str] | None = None) -> None:
        """Add the open series folders (and ``also``: series -> study) not known yet; coordinator only.
        Entries past retention are pruned."""
        self._load()
        now = time.time()
        seen = dict(also or {})
        for series_dir in (self.root / SERIES).glob("*/*"):
            seen.setdefault(series_dir.name, series_dir.parent.name)
        new = []
        for series_uid, study_uid in seen.items():
            if series_uid not in self.known:
                new.append({"series": series_uid, "study": study_uid, "at": now})
                self.known[series_uid] = (study_uid, now)
        if new:
            with open(self.path, "a") as fh:
                fh.write("".join(json.dumps(e) + "\n" for e in new))
        horizon = now - self.retention
        if any(at < horizon for _, at in self.known.values()):
            self.known = {k: v for k, v in self.known.items() if v[1] >= horizon}
            lines = "".join(
                json.dumps({"series": k, "study": v[0], "at": v[1]}) + "\n" for k, v in self.known.items()
            )
            write_durably(self.path, lines.encode(), self.root / TMP)
        with contextlib.suppress(FileNotFoundError):
            self._read_at = self.path.stat().st_mtime


def locate(spool_root: Path, series_map: SeriesStudyMap, sop_uid: str) -> tuple[str, str] | bool | None:
    """(study, series) of an instance received here; False when shipped but its study is unknown;
    None when this gateway has no record of it."""
    where = locate_in_spool(spool_root, sop_uid)
    if where is not None:
        return where
    series_uid = shipped_series(spool_root, sop_uid)
    if series_uid is None:
        return None
    study_uid = series_map.study_of(series_uid)
    return (study_uid, series_uid) if study_uid else False


@dataclass
class Reference:
    """One referenced instance and what is known about it."""

    sop_class: str
    sop_uid: str
    study_uid: str = ""
    series_uid: str = ""
    failure: int = 0  # a final failure reason, or 0 while undecided
    committed: bool = False


class CommitmentRequests:
    """Pending requests on disk: written at N-ACTION, updated by the worker, deleted after the report."""

    def __init__(self, spool_root: Path) -> None:
        self.root = spool_root
        self.folder = spool_root / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(
        self, transaction_uid: str, requester: str, references: list[Reference], wait: float, owner: str = ""
    ) -> Path:
        """Persist an N-ACTION request (PS3.4 J.3.2) and return its file.

        ``wait`` is how long, in seconds, the references may take to be indexed before they are
        reported as failures. ``owner``: the token of the requester's association (``open_token``).
        """
        now = time.time()
        path = self.folder / f"{int(now * 1000):015d}-{uuid.uuid4().hex[:8]}.json"
        self.save(
            path,
            {
                "transaction_uid": transaction_uid,
                "requester": requester,
                "received_at": now,
                "deadline": now + wait,
                "next_report_at": 0.0,
                "owner": owner,
                "references": [r.__dict__ for r in references],
            },
        )
        return path

    # The requester's open association (one marker file per association) -------------------

    def open_token(self) -> str:
        """A new association token of this process, its marker created (the association is open)."""
        token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        (self.folder / OPEN).mkdir(exist_ok=True)
        (self.folder / OPEN / token).touch()
        return token

    def close_token(self, token: str) -> None:
        """The association is gone: reports for it go on a new association from now on."""
        (self.folder / OPEN / token).unlink(missing_ok=True)

    def is_open(self, token: str) -> bool:
        """The association of ``token`` is still established (marker there, its process alive)."""
        if not token or not (self.folder / OPEN / token).exists():
            return False
        if _alive(token.split("-", 1)[0]):
            return True
        self.close_token(token)  # its process died (kill -9, a receiver restarted)
        return False

    def forget_open(self) -> None:
        """Remove every marker: at start, no association of an earlier run can be open (the PID of a
        process that died may have been reused)."""
        for marker in (self.folder / OPEN).glob("*") if (self.folder / OPEN).is_dir() else []:
            marker.unlink(missing_ok=True)

    # Claims: one sender per report -----------------------------------------------------------

    def claim(self, path: Path) -> Path | None:
        """Take ``path`` to send its report (rename to ``*.claimed-<pid>``); None when another did."""
        claimed = path.with_name(f"{path.name}{CLAIMED}{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return None
        return claimed

    @staticmethod
    def unclaim(claimed: Path) -> Path:
        """Give a claimed request back (the report was not accepted); returns its pending name."""
        path = claimed.with_name(claimed.name.split(CLAIMED, 1)[0])
        claimed.rename(path)
        return path

    def recover(self) -> None:
        """Give back the claims of processes that died while sending."""
        for claimed in self.folder.glob(f"*.json{CLAIMED}*"):
            if not _alive(claimed.name.rsplit(CLAIMED, 1)[1]):
                with contextlib.suppress(FileNotFoundError):
                    self.unclaim(claimed)

    def save(self, path: Path, data: dict[str, Any]) -> None:
        """Write a request's state durably to ``path``."""
        write_durably(path, json.dumps(data).encode(), self.root / TMP)

    def pending(self) -> list[Path]:
        """Files of the pending requests, oldest first."""
        return sorted(self.folder.glob("*.json"))

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        """The request stored in ``path``; raises OSError or ValueError (bad JSON)."""
        data: dict[str, Any] = json.loads(path.read_text())
        return data


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class CommitmentScp:
    """The N-ACTION handler (any process serving the port); reports on a still open association are
    sent from here (``SameAssociationReports``), the others by the coordinator's worker."""

    def __init__(self, config: GatewayConfig, access: AccessTable, activity: Activity) -> None:
        self.config = config
        self.access = access
        self.activity = activity
        self.requests = CommitmentRequests(config.spool_dir)
        self.series_map = SeriesStudyMap(config.spool_dir, config.shipped_retention_days * 86400)
        self.reports = SameAssociationReports(self.requests, config.ae_title, activity)
        self._tokens: dict[int, str] = {}  # id(association) -> its open token
        self._lock = threading.Lock()

    def _token(self, assoc: Any) -> str:
        with self._lock:
            token = self._tokens.get(id(assoc))
            if token is None:
                token = self._tokens[id(assoc)] = self.requests.open_token()
            return token

    def association_closed(self, event: evt.Event) -> None:
        """EVT_CONN_CLOSE (any association): the requester's association is gone, if it was one."""
        with self._lock:
            token = self._tokens.pop(id(event.assoc), None)
        if token is not None:
            self.requests.close_token(token)

    def handle_n_action(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """EVT_N_ACTION: validate, locate, persist; answer at once (the report follows later)."""
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            self._check_requester(calling, event)
            transaction_uid, references = self._references(event)
        except Rejected as exc:
            self.activity.add("commit_refused")
            log.warning("storage commitment refused: %s", exc)
            return _status(exc.status, str(exc)), None
        for ref in references:
            where = locate(self.config.spool_dir, self.series_map, ref.sop_uid)
            if isinstance(where, tuple):
                ref.study_uid, ref.series_uid = where
            elif where is None:
                ref.failure = NO_SUCH_INSTANCE  # never received here (or too long ago to know)
            else:
                ref.failure = PROCESSING_FAILURE  # shipped, but its study was never seen by this version
        token = self._token(event.assoc)
        path = self.requests.add(transaction_uid, calling, references, self.config.commitment_wait, token)
        self.reports.watch(path, event.assoc, token)
        self.activity.add("commit_requests")
        self.activity.add("commit_instances", len(references))
        log.info("storage commitment request accepted: %d instances", len(references))
        return SUCCESS, None

    def _check_requester(self, calling: str, event: evt.Event) -> None:
        if not self.access.of(calling).commit:
            raise Rejected(NOT_AUTHORISED, "this AE title may not request commitment")
        if calling not in self.access.peers:
            raise Rejected(PROCESSING_FAILURE, "requester AE title not in known_aets")
        if event.action_type != 1:
            raise Rejected(NO_SUCH_ACTION, "only action type 1 is defined")

    @staticmethod
    def _references(event: evt.Event) -> tuple[str, list[Reference]]:
        """(Transaction UID, references) of the request; raises Rejected when malformed."""
        try:
            info = event.action_information
            transaction_uid = str(info.TransactionUID)
            sequence = list(info.ReferencedSOPSequence)
        except (AttributeError, ValueError, TypeError) as exc:
            raise Rejected(MISSING_ATTRIBUTE, "TransactionUID and ReferencedSOPSequence required") from exc
        references = []
        for item in sequence[: MAX_REFERENCES + 1]:
            sop_class = str(item.get("ReferencedSOPClassUID", ""))
            sop_uid = str(item.get("ReferencedSOPInstanceUID", ""))
            if uid_problem(sop_uid) or uid_problem(sop_class):
                raise Rejected(INVALID_VALUE, "a referenced UID is not a valid UID")
            references.append(Reference(sop_class, sop_uid))
        if uid_problem(transaction_uid) or not references or len(references) > MAX_REFERENCES:
            raise Rejected(INVALID_VALUE, "invalid TransactionUID or reference count")
        return transaction_uid, references


class Rejected(Exception):
    """An N-ACTION refused with ``status``; the message is PHI-free."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status


class SameAssociationReports:
    """Sends decided reports on the requester's association while it is established (PS3.4 J.3.3).

    One daemon thread per serving process, running only while some request made on an open
    association of this process waits for its decision (a few file reads every ``WATCH_EVERY`` s).
    """

    def __init__(self, requests: CommitmentRequests, ae_title: str, activity: Activity) -> None:
        self.requests = requests
        self.ae_title = ae_title
        self.activity = activity
        self._watched: dict[Path, tuple[Any, str]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, path: Path, assoc: Any, token: str) -> None:
        """Send the report of request ``path`` on ``assoc`` if it is decided while ``token`` is open."""
        with self._lock:
            self._watched[path] = (assoc, token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="edge-commit-same-assoc", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                watched = list(self._watched.items())
                if not watched:
                    self._thread = None
                    return
            for path, (assoc, token) in watched:
                if self._step(path, assoc, token):
                    with self._lock:
                        self._watched.pop(path, None)
            time.sleep(WATCH_EVERY)

    def _step(self, path: Path, assoc: Any, token: str) -> bool:
        """True when ``path`` needs no more watching (sent, handed to the worker, or gone)."""
        if not assoc.is_established or not self.requests.is_open(token):
            return True  # the worker sends it on a new association
        try:
            data = self.requests.load(path)
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return False  # being replaced: look again
        if not data.get("decided"):
            return False
        claimed = self.requests.claim(path)
        if claimed is not None:
            self._send(claimed, data, assoc, token)
        return True

    def _send(self, claimed: Path, data: dict[str, Any], assoc: Any, token: str) -> None:
        references = [Reference(**r) for r in data["references"]]
        event_type, report = build_report(self.ae_title, str(data["transaction_uid"]), references)
        code = -1
        try:
            status, _ = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE
            )
            code = int(getattr(status, "Status", -1))
        except (RuntimeError, ValueError, AttributeError) as exc:  # released meanwhile, no context
            log.warning("storage commitment report on the open association failed: %s", type(exc).__name__)
        if code == SUCCESS:
            claimed.unlink()
            self.activity.add("commit_reports_same_association")
            log.info(
                "storage commitment report sent on the requester's association: %d refs", len(references)
            )
            return
        self.requests.close_token(token)  # the worker tries a new association
        self.requests.unclaim(claimed)
        log.warning("storage commitment report not accepted on the open association (0x%04X)", code & 0xFFFF)


def build_report(ae_title: str, transaction_uid: str, references: list[Reference]) -> tuple[int, Dataset]:
    """(event type, Event Information) of the N-EVENT-REPORT for decided references (PS3.4 J.3.3.1):
    1 when every instance is committed, 2 with a Failed SOP Sequence otherwise."""
    report = Dataset()
    report.TransactionUID = transaction_uid
    report.RetrieveAETitle = ae_title
    done = [r for r in references if r.committed]
    failed = [r for r in references if not r.committed]
    if done:
        report.ReferencedSOPSequence = [_item(r) for r in done]
    if failed:
        report.FailedSOPSequence = [_item(r, r.failure or PROCESSING_FAILURE) for r in failed]
    return (2 if failed else 1), report


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class CommitmentWorker:
    """Decides pending requests and sends their N-EVENT-REPORTs (runs in the coordinator)."""

    def __init__(self, config: GatewayConfig, archive: Archive | None = None) -> None:
        self.config = config
        self.access = AccessTable.from_config(config)
        self.archive = archive or Archive.from_config(config)
        self.requests = CommitmentRequests(config.spool_dir)
        self.series_map = SeriesStudyMap(config.spool_dir, config.shipped_retention_days * 86400)
        self._located: dict[str, str] = {}  # series -> study of pending references, for the map
        self.reported = 0
        self.failed_reports = 0
        self._lock = threading.Lock()
        self.requests.forget_open()
        self.requests.recover()

    def step(self, stop: threading.Event) -> None:
        """One pass over the pending requests, then a pause (``stop`` ends the pause early)."""
        self.series_map.learn(self._located)
        self._located = {}
        self.requests.recover()
        for path in self.requests.pending():
            if stop.is_set():
                return
            try:
                self._advance(path)
            except (OSError, ValueError, KeyError) as exc:
                log.error(
                    "storage commitment request unreadable (%s): kept for inspection", type(exc).__name__
                )
                path.rename(path.with_suffix(".bad"))
        stop.wait(CHECK_EVERY)

    def _advance(self, path: Path) -> None:
        data = self.requests.load(path)
        now = time.time()
        if now < float(data.get("next_report_at", 0.0)):
            return
        references = [Reference(**r) for r in data["references"]]
        self._located.update({r.series_uid: r.study_uid for r in references if r.study_uid})
        owner = str(data.get("owner") or "")
        if data.get("decided") and self.requests.is_open(owner):
            return  # the process serving the requester's association sends it
        changed = False
        for ref in references:
            if ref.committed or ref.failure:
                continue
            changed |= self._check(ref)
        undecided = [r for r in references if not r.committed and not r.failure]
        if undecided and now < float(data["deadline"]):
            if changed:
                data["references"] = [r.__dict__ for r in references]
                self.requests.save(path, data)
            return
        for ref in undecided:
            ref.failure = PROCESSING_FAILURE  # not shipped and indexed within commitment_wait
        data["references"] = [r.__dict__ for r in references]
        if not data.get("decided"):
            data["decided"] = True
            self.requests.save(path, data)
            if self.requests.is_open(owner):
                return  # PS3.4 J.3.3: on the requester's association while it is open
        claimed = self.requests.claim(path)
        if claimed is None:
            return  # the serving process took it
        if self._report(str(data["requester"]), str(data["transaction_uid"]), references):
            claimed.unlink()
            self.reported += 1
        else:
            self.failed_reports += 1
            data["next_report_at"] = now + RETRY_REPORT_AFTER
            self.requests.save(path, data)
            claimed.unlink()

    def _check(self, ref: Reference) -> bool:
        """Try to decide one instance; True when something about it changed."""
        if not ref.study_uid:
            where = locate(self.config.spool_dir, self.series_map, ref.sop_uid)
            if not isinstance(where, tuple):
                return False
            ref.study_uid, ref.series_uid = where
            return True
        try:
            verdict = self._archived(ref)
        except QueryError as exc:
            log.warning("storage commitment check deferred: %s", type(exc).__name__)
            return False
        if verdict is None:
            return False
        if verdict:
            ref.committed = True
        else:
            ref.failure = CLASS_INSTANCE_CONFLICT
        return True

    def _archived(self, ref: Reference) -> bool | None:
        """True: indexed (same SOP class, this site) and its zip in the bucket; False: indexed under
        another SOP class; None: not (yet) both."""
        item = self.archive.instance(self.config.gateway_id, ref.study_uid, ref.series_uid, ref.sop_uid)
        if item is None:
            return None
        if ref.sop_class and str(item.get("SOPClassUID", "")) != ref.sop_class:
            return False
        return True if self.archive.object_exists(str(item.get("object_key", ""))) else None

    def _report(self, requester: str, transaction_uid: str, references: list[Reference]) -> bool:
        """N-EVENT-REPORT on a new association to the requester's ``known_aets`` address; True when
        it answered 0x0000."""
        peer = self.access.peers.get(requester)
        if peer is None:
            log.error("storage commitment report undeliverable: requester no longer in known_aets")
            return False
        event_type, report = build_report(self.config.ae_title, transaction_uid, references)
        done = [r for r in references if r.committed]
        failed = [r for r in references if not r.committed]
        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StorageCommitmentPushModel, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        assoc = ae.associate(peer.host, peer.port, ae_title=requester, ext_neg=[role])
        if not assoc.is_established:
            log.warning(
                "storage commitment report: the requester did not accept an association; retrying later"
            )
            return False
        try:
            status, _ = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE
            )
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(getattr(status, "Status", -1))
        log.info(
            "storage commitment report sent: %d committed, %d failed, status 0x%04X",
            len(done),
            len(failed),
            code & 0xFFFF,
        )
        return code == SUCCESS


def _item(ref: Reference, reason: int = 0) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class
    item.ReferencedSOPInstanceUID = ref.sop_uid
    if reason:
        item.FailureReason = reason
    return item


def pending_count(spool_dir: Path) -> int:
    """Number of storage commitment requests waiting in the spool at ``spool_dir``."""
    folder = spool_dir / FOLDER
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0
