"""Query/Retrieve SCP (PS3.4 Annex C): C-FIND, C-MOVE and C-GET answered from the cloud archive.

- C-FIND, Patient Root and Study Root, levels PATIENT / STUDY / SERIES / IMAGE.
  Matching (PS3.4 C.2.2.2): single value, wildcards ``*`` ``?``, UID lists,
  date and time ranges, person names case- and accent-insensitive, universal
  (empty) keys. The narrowest index is chosen by ``query.search`` (the QIDO-RS
  code); the remaining keys are matched on the candidates. Each match goes out
  as a Pending response as soon as it is found; C-CANCEL ends the search with
  0xFE00; after ``max_find_matches`` matches the search ends with 0xB001
  ("matching reached response limit").
  Lower levels need no upper unique key: a SERIES query without
  StudyInstanceUID searches the studies its study-level keys select
  (relational-style), still bounded by the match limit.
- C-MOVE / C-GET, levels PATIENT / STUDY / SERIES / IMAGE: instances are read
  ahead of the sending (``Archive.fetch``: the retrieve cache, else one ranged GET per
  run of adjacent members of a part) and sent by C-STORE (to the move destination
  from ``known_aets``, or back over the C-GET association) as stored, converted or
  failed with a reason (``edge_gateway.retrieve_sender``). pynetdicom counts
  sub-operations, sends Pending responses and lists failed SOP Instance UIDs (0xB000
  when some failed, 0xA702 when all did).
- Sites are partitions: a retrieve whose unique keys match in more than one configured
  site is refused 0xC002 before any sub-operation (never merged at one destination);
  C-FIND flags such studies with Pending 0xFF01 and an Error Comment.
- Per calling AE permissions (``edge_gateway.dimse_access``): a refused request
  gets 0x0124 (Refused: Not Authorized, PS3.7 C.5), a move to a known destination this
  AE title may not use too; an unknown move destination 0xA801.

Errors reading the archive answer 0xC001 (find) or count as failed sub-operations
(retrieve). Logs carry UIDs and counts only, never patient attributes.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from common import attributes as attrs
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from query.errors import BadRequest, QueryError
from query.matching import date_range, full_time, has_wildcard, match_name, match_text, time_range, uid_list
from query.search import STUDY_MATCHING, StudyFilter
from query.store import Item

from edge_gateway import retrieve_sender
from edge_gateway.archive_client import Archive, Fetched, level_json
from edge_gateway.dimse_access import AccessTable
from edge_gateway.retrieve_sender import Retrieved, Unsendable

log = logging.getLogger(__name__)
# pynetdicom logs whole C-FIND/C-MOVE/C-GET identifiers (patient names, IDs) at INFO: never.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}
FIND_CLASSES = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
MOVE_CLASSES = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
GET_CLASSES = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)

PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # PS3.4 C.4.1.1.4: pending, with a warning (here: the UID is in several sites)
CANCELLED = 0xFE00
LIMIT_REACHED = 0xB001
NOT_AUTHORISED = 0x0124
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC001
MOVE_DESTINATION_UNKNOWN = 0xA801
SITES_AMBIGUOUS = 0xC002  # Failed: unable to process (PS3.4 C.4.2.1.5, C.4.3.1.4 "Cxxx")

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT_KEYS = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex"}
STUDY_LEVEL = {a.keyword: a.vr for a in attrs.STUDY_ATTRIBUTES} | {"ModalitiesInStudy": "CS"}
SERIES_LEVEL = {a.keyword: a.vr for a in attrs.SERIES_ATTRIBUTES}
IMAGE_LEVEL = {a.keyword: a.vr for a in attrs.INSTANCE_ATTRIBUTES}
# Keys never matched on (computed counts, or about the response itself).
NOT_MATCHED = {
    "QueryRetrieveLevel",
    "SpecificCharacterSet",
    "RetrieveAETitle",
    "ModalitiesInStudy",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "TimezoneOffsetFromUTC",
}
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts (odd IDs 1..255)

Handler = tuple[Any, ...]


class Refused(Exception):
    """The request cannot be served; ``status`` is the DICOM status, the message is PHI-free."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status


class Activity:
    """Counters of query, retrieve and commitment activity, for ``edge-gateway status``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last: dict[str, float] = {}

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name`` and note the time of its kind (the prefix before ``_``)."""
        with self._lock:
            self.counts[name] += amount
            self.last[name.split("_", 1)[0]] = time.time()

    def snapshot(self) -> dict[str, Any]:
        """Copy of the counters and of the last times (seconds since the epoch), as JSON-ready dicts."""
        with self._lock:
            return {"counts": dict(self.counts), "last": dict(self.last)}


def status_dataset(status: int, comment: str) -> Dataset:
    """A status with an Error Comment (0000,0902): at most 64 characters, no PHI."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def _text(element: DataElement) -> str:
    """A matching key's value as QIDO-style text ('' for universal matching)."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value).strip()


def _json_text(level: Mapping[str, Any], keyword: str) -> list[str]:
    """Values of an attribute in a level's DICOM JSON as text (person names alphabetic)."""
    attribute = attrs.BY_KEYWORD.get(keyword)
    if attribute is None:
        return []
    values = (level.get(attribute.tag) or {}).get("Value") or []
    out: list[str] = []
    for value in values:
        if isinstance(value, dict):
            out.append(str(value.get("Alphabetic", "")))
        elif value is not None:
            out.append(str(value))
    return out


def matches_key(keyword: str, vr: str, pattern: str, values: list[str]) -> bool:
    """PS3.4 C.2.2.2 matching of one key against the stored values (any value may match).

    Raises query.errors.BadRequest for a malformed UID list, date or time range.
    """
    if pattern in ("", "*"):
        return True
    matcher = _matcher(keyword, vr, pattern)
    return any(matcher(v) for v in values)


def _matcher(keyword: str, vr: str, pattern: str) -> Callable[[str], bool]:
    if vr == "UI":
        return set(uid_list(pattern, keyword)).__contains__
    if vr == "DA":
        return date_range(pattern, keyword).contains
    if vr == "TM":
        span = time_range(pattern, keyword)
        return lambda v: bool(v) and span.contains(full_time(v))
    if vr == "PN":
        return lambda v: match_name(v, pattern, fuzzy=False)
    if vr in ("IS", "DS", "US"):
        return lambda v: v.strip() == pattern.strip()
    return lambda v: match_text(v, pattern)


class Query:
    """One C-FIND/C-MOVE/C-GET identifier: the level and the non-universal matching keys by level."""

    def __init__(self, level: str, keys: dict[str, str], modalities: str = "") -> None:
        """A query at ``level`` (one of LEVELS) on ``keys`` (keyword -> matching value).

        ``modalities``: a ModalitiesInStudy value to search studies by (from the identifier's
        ModalitiesInStudy, else its Modality when that is a single value).
        """
        self.level = level
        self.keys = keys
        self.study_params = {k: v for k, v in keys.items() if k in STUDY_MATCHING}
        if modalities:
            self.study_params["ModalitiesInStudy"] = modalities

    @classmethod
    def from_identifier(cls, identifier: Dataset, patient_root: bool) -> Query:
        """The query an identifier asks (PS3.4 C.4.1.1.3); Refused when its level is missing or
        not offered by the information model."""
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
        if level not in LEVELS or (level == "PATIENT" and not patient_root):
            raise Refused(IDENTIFIER_MISMATCH, "QueryRetrieveLevel missing or not offered by this model")
        keys: dict[str, str] = {}
        for element in identifier:
            if element.tag.is_private or element.VR == "SQ" or element.tag.group == 0x0002:
                continue
            keyword = element.keyword
            text = _text(element)
            if keyword and text and keyword not in NOT_MATCHED:
                keys[keyword] = text
        modalities = ""
        modality = keys.get("Modality", "")
        if modality and not has_wildcard(modality) and "ModalitiesInStudy" not in identifier:
            modalities = modality
        if "ModalitiesInStudy" in identifier and _text(identifier["ModalitiesInStudy"]):
            modalities = _text(identifier["ModalitiesInStudy"])
        return cls(level, keys, modalities)

    def filter(self) -> StudyFilter:
        """The study-level keys as the index search's filter (the same matching as QIDO-RS)."""
        return StudyFilter.from_params(self.study_params)

    def matches(self, level: dict[str, str], data: Mapping[str, Any]) -> bool:
        """Every key of this level (``level`` maps keyword to VR) matches the level's JSON."""
        return all(
            matches_key(k, vr, self.keys[k], _json_text(data, k)) for k, vr in level.items() if k in self.keys
        )


class Match:
    """A study, optionally a series and an instance of it: one C-FIND answer or retrieve unit."""

    def __init__(self, study: Item, series: Item | None = None, instance: Item | None = None) -> None:
        self.study = study
        self.series = series
        self.instance = instance

    def json(self) -> dict[str, Any]:
        """The C-FIND answer's identifier as DICOM JSON: study attributes, then series and instance ones.

        Adds Modalities in Study and the numbers of related series and instances (PS3.4 C.3.4).
        """
        merged = level_json(self.study)
        modalities = sorted(self.study.get("modalities", ()))
        if modalities:
            merged[attrs.MODALITIES_IN_STUDY.tag] = {"vr": "CS", "Value": modalities}
        merged[attrs.STUDY_RELATED_SERIES.tag] = {
            "vr": "IS",
            "Value": [int(self.study.get("series_count", 0))],
        }
        merged[attrs.STUDY_RELATED_INSTANCES.tag] = {
            "vr": "IS",
            "Value": [int(self.study.get("instance_count", 0))],
        }
        if self.series is not None:
            merged.update(level_json(self.series))
            merged[attrs.SERIES_RELATED_INSTANCES.tag] = {
                "vr": "IS",
                "Value": [int(self.series.get("instance_count", 0))],
            }
        if self.instance is not None:
            merged.update(level_json(self.instance))
        return merged


def find_matches(archive: Archive, query: Query) -> Iterator[Match]:
    """Matches of a query, level by level, as the index pages arrive (generator: stops when closed)."""
    seen_patients: set[tuple[str, str]] = set()
    for study in archive.studies(query.filter()):
        study_json = level_json(study)
        if not query.matches(STUDY_LEVEL, study_json):
            continue
        if query.level == "PATIENT":
            patient = (str(study.get("site", "")), str(study.get("PatientID", "")))
            if patient not in seen_patients:
                seen_patients.add(patient)
                yield Match(study)
            continue
        if query.level == "STUDY":
            yield Match(study)
            continue
        for series in archive.series(study):
            if not query.matches(SERIES_LEVEL, level_json(series)):
                continue
            if query.level == "SERIES":
                yield Match(study, series)
                continue
            for instance in archive.instances(study, str(series["series_uid"])):
                if query.matches(IMAGE_LEVEL, level_json(instance)):
                    yield Match(study, series, instance)


def response_identifier(
    requested: Dataset, match: Match, level: str, ae_title: str, archive: Archive
) -> Dataset:
    """The requested keys filled from the match (empty when unknown) and the unique keys.

    PS3.4 C.4.1.1.3.2: every requested key is returned, with the level's unique keys.
    """
    full = Dataset.from_json(match.json())
    answer = Dataset()
    answer.SpecificCharacterSet = "ISO_IR 192"  # values come from the index as Unicode
    for element in requested:
        if element.tag.is_private or element.tag.group == 0x0002 or element.keyword == "SpecificCharacterSet":
            continue
        if element.tag in full:
            answer[element.tag] = full[element.tag]
        elif element.VR == "SQ":
            answer.add_new(element.tag, "SQ", [])
        else:
            answer.add_new(element.tag, element.VR, None)
    if "NumberOfPatientRelatedStudies" in requested and level == "PATIENT":
        pid = str(match.study.get("PatientID", ""))
        count = sum(1 for _ in archive.studies(StudyFilter.from_params({"PatientID": pid}))) if pid else 1
        answer.NumberOfPatientRelatedStudies = count
    unique = {"PATIENT": ["PatientID"], "STUDY": ["StudyInstanceUID"]}
    unique["SERIES"] = [*unique["STUDY"], "SeriesInstanceUID"]
    unique["IMAGE"] = [*unique["SERIES"], "SOPInstanceUID"]
    for keyword in unique[level]:
        if keyword in full and keyword not in answer:
            setattr(answer, keyword, full[keyword].value)
    answer.QueryRetrieveLevel = level
    answer.RetrieveAETitle = ae_title
    return answer


class QueryRetrieve:
    """The C-FIND, C-MOVE and C-GET handlers, with their dependencies injected (STYLE 11)."""

    def __init__(
        self,
        archive: Archive,
        access: AccessTable,
        ae_title: str,
        max_matches: int,
        activity: Activity,
        fast_send: bool = True,
    ) -> None:
        """``fast_send``: install ``retrieve_sender``'s sending path (guarded; stock pynetdicom
        when False or when the guard refuses)."""
        self.archive = archive
        self.access = access
        self.ae_title = ae_title
        self.max_matches = max_matches
        self.activity = activity
        self._lock = threading.Lock()
        # id(C-GET/C-MOVE request) -> (the request, its instances); the request is kept so that
        # its id cannot be reused by another one while the entry exists.
        self._planned: dict[int, tuple[Any, list[Item]]] = {}
        if fast_send:
            retrieve_sender.install()
        else:
            retrieve_sender.remove()

    def handlers(self) -> list[Handler]:
        """pynetdicom handlers for C-FIND, C-MOVE and C-GET (PS3.4 C.4.1, C.4.2, C.4.3)."""
        return [
            (evt.EVT_C_FIND, self.handle_find),
            (evt.EVT_C_MOVE, self.handle_move),
            (evt.EVT_C_GET, self.handle_get),
        ]

    @staticmethod
    def contexts() -> list[tuple[str, list[str]]]:
        """(SOP class, transfer syntaxes) we accept as SCP: the Q/R models, uncompressed syntaxes."""
        return [(uid, list(UNCOMPRESSED)) for uid in (*FIND_CLASSES, *MOVE_CLASSES, *GET_CLASSES)]

    # C-FIND ------------------------------------------------------------------------------

    def handle_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """EVT_C_FIND: yields (0xFF00, identifier) per match, then nothing (success) or a final status."""
        calling = str(event.assoc.requestor.ae_title)
        if not self.access.of(calling).find:
            self.activity.add("find_refused")
            log.warning("C-FIND refused: calling AE title not permitted to query")
            yield status_dataset(NOT_AUTHORISED, "this AE title may not query"), None
            return
        try:
            requested = event.identifier
            query = Query.from_identifier(requested, event.request.AffectedSOPClassUID in PATIENT_ROOT)
            query.filter()  # malformed values are refused before any response
            for keyword in query.keys:  # dates and times of every level too, not only when first compared
                if (vr := requested[keyword].VR) in ("DA", "TM"):
                    matches_key(keyword, vr, query.keys[keyword], [])
        except Refused as exc:
            self.activity.add("find_failed")
            yield status_dataset(exc.status, str(exc)), None
            return
        except (BadRequest, ValueError, KeyError, TypeError) as exc:
            self.activity.add("find_failed")
            log.warning("C-FIND refused: identifier not understood (%s)", type(exc).__name__)
            yield (
                status_dataset(IDENTIFIER_MISMATCH, str(exc) if isinstance(exc, BadRequest) else "bad key"),
                None,
            )
            return
        self.activity.add("find")
        sent = 0
        shared: dict[str, int] = {}  # study UID -> number of configured sites holding it
        try:
            for match in find_matches(self.archive, query):
                if event.is_cancelled:
                    log.info("C-FIND cancelled by the peer after %d matches", sent)
                    self.activity.add("find_cancelled")
                    yield CANCELLED, None
                    return
                if sent >= self.max_matches:
                    log.info("C-FIND reached the match limit (%d)", self.max_matches)
                    self.activity.add("find_limited")
                    yield (
                        status_dataset(
                            LIMIT_REACHED, f"more than {self.max_matches} matches: narrow the query"
                        ),
                        None,
                    )
                    return
                answer = response_identifier(requested, match, query.level, self.ae_title, self.archive)
                sent += 1
                yield self._pending(match, shared), answer
        except QueryError as exc:
            log.error("C-FIND failed reading the archive: %s", type(exc).__name__)
            self.activity.add("find_failed")
            yield status_dataset(UNABLE_TO_PROCESS, "the cloud archive cannot be read now"), None
            return
        self.activity.add("find_matches", sent)
        log.info("C-FIND %s level: %d matches", query.level, sent)

    def _pending(self, match: Match, shared: dict[str, int]) -> int | Dataset:
        """0xFF00, or for a study whose UID is held by several configured sites 0xFF01 with an
        Error Comment naming the count: the two answers are two studies (sites are partitions),
        each with its own patient, and a C-MOVE/C-GET by that UID is refused (never merged)."""
        uid = str(match.study.get("study_uid", ""))
        if uid not in shared:
            shared[uid] = self.archive.sites_holding(uid)
        if shared[uid] < 2:
            return PENDING
        self.activity.add("find_shared_uid")
        return status_dataset(PENDING_WARNING, f"StudyInstanceUID in {shared[uid]} sites: cannot retrieve")

    # C-MOVE / C-GET ----------------------------------------------------------------------

    def _instances(self, event: evt.Event) -> list[Item]:
        """The instance items a retrieve identifier selects (unique keys; other keys are ignored)."""
        query = Query.from_identifier(event.identifier, event.request.AffectedSOPClassUID in PATIENT_ROOT)
        for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if keyword in query.keys and has_wildcard(query.keys[keyword]):
                # PS3.4 C.4.2.2.1, C.4.3.2.1: unique keys are single values (UIDs: lists), never wildcards.
                raise Refused(IDENTIFIER_MISMATCH, f"{keyword}: no wildcards in a retrieve identifier")
            if keyword in query.keys and keyword != "PatientID":
                uid_list(query.keys[keyword], keyword)
        if query.level == "PATIENT" and "PatientID" not in query.keys:
            raise Refused(IDENTIFIER_MISMATCH, "PATIENT level needs PatientID")
        if query.level != "PATIENT" and "StudyInstanceUID" not in query.keys:
            raise Refused(IDENTIFIER_MISMATCH, "StudyInstanceUID is required")
        if query.level in ("IMAGE",) and "SeriesInstanceUID" not in query.keys:
            raise Refused(IDENTIFIER_MISMATCH, "SeriesInstanceUID is required at IMAGE level")
        unique = {"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}
        retrieve = Query("IMAGE", {k: v for k, v in query.keys.items() if k in unique})
        found = []
        sites_of: dict[tuple[str, str], set[str]] = {}
        for match in find_matches(self.archive, retrieve):
            assert match.instance is not None
            found.append(match.instance)
            if len(found) > 65535:
                raise Refused(0xA701, "more than 65535 instances: retrieve in smaller steps")
            site = str(match.study.get("site", ""))
            for unique_key in _unique_values(query.level, match):
                sites_of.setdefault(unique_key, set()).add(site)
        ambiguous = max((len(sites) for sites in sites_of.values()), default=0)
        if ambiguous > 1:
            # Sites are partitions: the same UID (or Patient ID) in two sites is two objects that
            # must never be merged at one destination, so nothing is sent (PS3.4 C.4.2.1.4: unable
            # to process). The comment names a count only: no UID, no patient data.
            self.activity.add("retrieve_ambiguous")
            log.warning("retrieve refused: a unique key matches in %d sites", ambiguous)
            raise Refused(SITES_AMBIGUOUS, f"the identifier matches in {ambiguous} sites: not merged")
        return found

    def _prepare(self, fetched: Fetched, assoc: Any, kind: str, evictable: bool = False) -> Dataset:
        """The dataset to yield for one sub-operation; one that cannot be read or sent in a syntax
        the destination accepted becomes a failed sub-operation, its reason logged and counted.

        pynetdicom counts a dataset without SOPClassUID as a failed C-STORE and lists its
        SOPInstanceUID in the Failed SOP Instance UID List, which is what the peer must be told.
        """
        item, got = fetched
        sop_uid = str(item.get("sop_uid", ""))
        if evictable and isinstance(got, Retrieved) and got.path is not None and not got.path.exists():
            try:  # evicted from the cache since it was planned: read it again
                got = Retrieved(
                    got.sop_class, sop_uid, got.transfer_syntax, self.archive.instance_bytes(item)
                )
            except Exception as exc:
                got = exc
        if isinstance(got, Exception):
            log.error("instance unreadable from the archive: %s", type(got).__name__, extra={"sop": sop_uid})
            self.activity.add(f"{kind}_unreadable")
            return _failed(sop_uid)
        syntaxes = retrieve_sender.accepted_syntaxes(assoc, got.sop_class) if assoc is not None else []
        stream = assoc is not None and retrieve_sender.installed() and "send_c_store" in vars(assoc)
        try:
            ds = retrieve_sender.prepare(got, syntaxes, stream)
        except Unsendable as exc:
            log.warning("sub-operation failed: %s", exc, extra={"sop": sop_uid})
            self.activity.add(f"{kind}_unsendable")
            return _failed(sop_uid)
        if ds.file_meta.get("TransferSyntaxUID") != got.transfer_syntax:
            self.activity.add(f"{kind}_converted")
        return ds

    def _send(
        self, instances: list[Item], event: evt.Event, kind: str, assoc: Callable[[], Any]
    ) -> Iterator[Any]:
        """The count of sub-operations, then (0xFF00, dataset) per instance; C-CANCEL stops it.

        ``assoc`` gives the association the sub-operations go over (known once pynetdicom made it).
        Instances are sent in zip order (part, member offset), read ahead by ``Archive.fetch``.
        """
        self.activity.add(kind)
        yield len(instances)
        ordered = sorted(
            instances, key=lambda i: (str(i.get("object_key", "")), int(i.get("member_offset") or 0))
        )
        fetched = self.archive.fetch(ordered)
        # Cache files are the newest entries; only a retrieve near the cache's size can evict them
        # before they are sent (a stat per instance is not free on a busy disk).
        cache = self.archive.cache
        size = sum(int(i.get("member_size") or 0) for i in instances)
        evictable = cache is not None and size > cache.max_bytes // 2
        sent = 0
        try:
            for one in fetched:
                if event.is_cancelled:
                    self.activity.add(f"{kind}_cancelled")
                    yield CANCELLED, Dataset()
                    return
                sent += 1
                yield PENDING, self._prepare(one, assoc(), kind, evictable)
        finally:
            fetched.close()
        self.activity.add(f"{kind}_instances", sent)
        log.info("%s: %d instances offered", kind.upper(), sent)

    def _failure(self, exc: Exception, kind: str) -> tuple[Dataset, None]:
        """The final status for a retrieve refused before its sub-operations."""
        self.activity.add(f"{kind}_failed")
        if isinstance(exc, Refused):
            return status_dataset(exc.status, str(exc)), None
        if isinstance(exc, BadRequest):
            return status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
        if isinstance(exc, QueryError):
            log.error("%s failed reading the archive: %s", kind.upper(), type(exc).__name__)
            return status_dataset(0xA701, "the cloud archive cannot be read now"), None
        log.warning("%s refused: identifier not understood (%s)", kind.upper(), type(exc).__name__)
        return status_dataset(IDENTIFIER_MISMATCH, "identifier not understood"), None

    def retrieve_refusal(self, event: evt.Event) -> tuple[int, str] | None:
        """(status, PHI-free comment) when a C-GET or C-MOVE fails before any sub-operation
        (not permitted, identifier not understood, a UID in several sites, archive unreadable);
        None when it can go ahead (its instances are kept for the handler).

        Asked by ``retrieve_sender`` before pynetdicom asks the handler for a count, so the
        final response carries no sub-operation counts for sub-operations that never were
        (PS3.4 C.4.2.1.6, C.4.3.1.6) and no association is made with a move destination.
        A move to an unknown or forbidden destination is left to ``move_refusal`` / the handler.
        """
        move = event.event is evt.EVT_C_MOVE
        calling = str(event.assoc.requestor.ae_title)
        kind = "move" if move else "get"
        if move:
            destination = str(event.move_destination).strip()
            if destination not in self.access.peers or not self.access.of(calling).may_move_to(destination):
                return None
        elif not self.access.of(calling).get:
            log.warning("C-GET refused: calling AE title not permitted to retrieve")
            return _verdict(self._failure(Refused(NOT_AUTHORISED, "this AE title may not retrieve"), kind))
        try:
            instances = self._instances(event)
        except RETRIEVE_ERRORS as exc:
            return _verdict(self._failure(exc, kind))
        with self._lock:
            self._planned[id(event.request)] = (event.request, instances)
        return None

    def _planned_instances(self, event: evt.Event) -> list[Item]:
        """The instances ``retrieve_refusal`` found for this request, else found now."""
        with self._lock:
            planned = self._planned.pop(id(event.request), None)
        if planned is not None and planned[0] is event.request:
            return planned[1]
        return self._instances(event)

    def handle_get(self, event: evt.Event) -> Iterator[Any]:
        """EVT_C_GET: yields the number of sub-operations, then (0xFF00, dataset) per instance.

        The datasets go back over the same association (the peer took the Storage SCP role).
        """
        if not self.access.of(str(event.assoc.requestor.ae_title)).get:
            log.warning("C-GET refused: calling AE title not permitted to retrieve")
            yield 1  # pynetdicom wants a count before any status
            yield self._failure(Refused(NOT_AUTHORISED, "this AE title may not retrieve"), "get")
            return
        try:
            instances = self._planned_instances(event)
        except RETRIEVE_ERRORS as exc:
            yield 1  # only without retrieve_sender: pynetdicom wants a count before any status
            yield self._failure(exc, "get")
            return
        attached = retrieve_sender.attach(event.assoc)
        try:
            yield from self._send(instances, event, "get", lambda: event.assoc)
        finally:
            if attached:
                retrieve_sender.detach(event.assoc)

    def move_refusal(self, calling: str, destination: str) -> tuple[int, str] | None:
        """(0x0124, comment) when ``calling`` may not move to ``destination``, a known AE; else None.

        Asked by ``retrieve_sender`` before pynetdicom contacts the destination.
        """
        if destination in self.access.peers and not self.access.of(calling).may_move_to(destination):
            self.activity.add("move_refused")
            log.warning("C-MOVE refused: this AE title may not move to this destination")
            return NOT_AUTHORISED, "this AE title may not move to this destination"
        return None

    def handle_move(self, event: evt.Event) -> Iterator[Any]:
        """EVT_C_MOVE: yields the destination (host, port, association kwargs), the count, then datasets.

        A destination not in ``known_aets`` gets 0xA801 (Move Destination unknown) before any
        association is made; one this calling AE title may not move to gets 0x0124 from
        ``move_refusal`` first (0xA801 here when ``retrieve_sender`` is not installed).
        """
        calling = str(event.assoc.requestor.ae_title)
        destination = str(event.move_destination).strip()
        peer = self.access.peers.get(destination)
        if peer is None or not self.access.of(calling).may_move_to(destination):
            self.activity.add("move_refused")
            log.warning("C-MOVE refused: destination unknown or not permitted for this AE title")
            yield None, None
            return
        try:
            instances = self._planned_instances(event)
        except RETRIEVE_ERRORS as exc:
            # Only without retrieve_sender (else retrieve_refusal answered): pynetdicom wants
            # the destination and a count before any status.
            yield peer.host, peer.port, {"ae_title": destination, "contexts": [_verification()]}
            yield 1
            yield self._failure(exc, "move")
            return
        opened: list[Any] = []
        yield (
            peer.host,
            peer.port,
            {
                "ae_title": destination,
                "contexts": sending_contexts(instances),
                "evt_handlers": [(evt.EVT_CONN_OPEN, _destination_open, [opened])],
            },
        )
        yield from self._send(instances, event, "move", lambda: opened[-1] if opened else None)


RETRIEVE_ERRORS = (Refused, QueryError, ValueError, KeyError, TypeError)


def _unique_values(level: str, match: Match) -> Iterator[tuple[str, str]]:
    """(keyword, value) of the unique keys a retrieve match carries: each must belong to one site.

    PATIENT level: the Patient ID (the same ID in two sites is two patients). Always the study,
    series and SOP Instance UIDs (the same UID in two sites is two objects).
    """
    if level == "PATIENT":
        yield "PatientID", str(match.study.get("PatientID", ""))
    yield "StudyInstanceUID", str(match.study.get("study_uid", ""))
    if match.instance is not None:
        yield "SOPInstanceUID", str(match.instance.get("sop_uid", ""))


def _verdict(failure: tuple[Dataset, None]) -> tuple[int, str]:
    status = failure[0]
    return int(status.Status), str(status.ErrorComment)


def _failed(sop_uid: str) -> Dataset:
    failed = Dataset()
    failed.SOPInstanceUID = sop_uid
    return failed


def _destination_open(event: evt.Event, opened: list[Any]) -> None:
    """The move destination's association: no Nagle delay (it would hold back the tail of each
    C-STORE), the sending path attached, and remembered for its accepted contexts."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    retrieve_sender.attach(event.assoc)
    opened.append(event.assoc)


def _verification() -> PresentationContext:
    context = PresentationContext()
    context.abstract_syntax = UID("1.2.840.10008.1.1")
    context.transfer_syntax = list(UNCOMPRESSED)
    return context


def sending_contexts(instances: list[Item]) -> list[PresentationContext]:
    """Presentation contexts to propose to a move destination (PS3.4 C.4.2.3.1).

    Per SOP class: its stored transfer syntax when compressed (sent as stored), and
    Explicit/Implicit VR Little Endian (uncompressed data is converted between them by
    pynetdicom; a compressed instance whose syntax the destination refuses is decoded to
    Explicit VR Little Endian, or fails its sub-operation when it cannot be).
    """
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for item in instances:
        sop_class = str(item.get("SOPClassUID") or "")
        syntax = str(item.get("transfer_syntax") or ExplicitVRLittleEndian)
        if not sop_class:
            continue
        if syntax not in UNCOMPRESSED:
            wanted[(sop_class, (syntax,))] = None
        wanted[(sop_class, tuple(UNCOMPRESSED))] = None
    contexts = []
    for sop_class, syntaxes in list(wanted)[:MAX_CONTEXTS]:
        context = PresentationContext()
        context.abstract_syntax = UID(sop_class)
        context.transfer_syntax = [UID(s) for s in syntaxes]
        contexts.append(context)
    return contexts or [_verification()]
