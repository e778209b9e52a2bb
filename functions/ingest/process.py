"""Ingest one series part: read headers from the zip in S3, index them, write the report.

What can happen to an instance, as the report lists it:

- ``indexed``: new in the index; ``redelivered``: this part was ingested before;
  ``duplicate``: the same bytes came in another part (nothing changes).
- ``updated``: a new version (same SOP Instance UID, other bytes) received later
  than the indexed one replaced it; the old one is kept in the instance's history
  (``VERSION#`` items) and study/series attributes follow the newest version, so a
  corrected PatientName is found by the new name and no longer by the old.
  ``superseded``: an older version arrived late and only went into the history.
- ``conflict``: kept out of the index. Kind ``patient``: the instance names
  another patient (PatientID + IssuerOfPatientID, else PatientName) than its
  study; a conflict item records it for an administrator (``/api/admin/conflicts``),
  who may accept it (re-ingest indexes it) or dismiss it. Kind ``same_uid_in_part``:
  two members of one part with one SOP Instance UID and other bytes (the first is kept).
- ``rejected``: not indexable, with a reason.

Order matters for retries: the DICOM JSON headers go to S3 first, then the
index (conditional, so a retry after a crash finishes the work without counting
twice), then the report and the object tag that a person reads in the console.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any, cast

from common import keys, part_format
from common.observability import logger, tracer
from common.s3_reader import PresignedRangeFetcher, S3RangeReader

from ingest.extract import InstanceRecord, RejectedMember, extract, read_header
from ingest.index_writer import IndexWriter, StudyState, same_patient
from ingest.zip_part import Member, Part, RejectedPart, UnreadableMember, open_part, prefetch_range

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

DEFAULT_SITE = part_format.DEFAULT_SITE
# Parallel ranged GETs per part (member first blocks). Chosen from bench/ingest_bench.py.
DEFAULT_READ_CONCURRENCY = int(os.environ.get("INGEST_READ_CONCURRENCY", "32"))
# The Lambda reads member headers through one presigned URL (see common.s3_reader.PresignedRangeFetcher).
PRESIGNED_READS = os.environ.get("INGEST_PRESIGNED_READS", "1") != "0"


@dataclass
class IngestReport:
    """What happened to every member of a part; stored next to the object."""

    key: str
    study_uid: str
    series_uid: str
    part_id: str
    site: str = DEFAULT_SITE
    status: str = "indexed"
    reason: str = ""
    members: int = 0
    indexed: list[str] = field(default_factory=list)
    redelivered: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    conflict: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refreshed: int = 0
    fingerprints: str = ""
    object_size: int = 0
    bytes_fetched: int = 0
    requests: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The report's counts, sizes (bytes) and request count, for the log and the Lambda's answer."""
        return {
            "status": self.status,
            "members": self.members,
            "indexed": len(self.indexed),
            "redelivered": len(self.redelivered),
            "duplicate": len(self.duplicate),
            "updated": len(self.updated),
            "superseded": len(self.superseded),
            "conflict": len(self.conflict),
            "patient_conflict": sum(1 for c in self.conflict if c.get("kind") == "patient"),
            "rejected": len(self.rejected),
            "bytes_fetched": self.bytes_fetched,
            "requests": self.requests,
            "object_size": self.object_size,
        }


@tracer.capture_method(capture_response=False)
def ingest_object(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    table_name: str,
    bucket: str,
    key: str,
    *,
    concurrency: int = DEFAULT_READ_CONCURRENCY,
    refresh: bool = False,
    presigned_reads: bool = False,
    version_id: str | None = None,
) -> IngestReport:
    """Index one part. Safe to run any number of times on the same object (redelivery, retry, re-index).

    ``version_id`` is the object version the S3 event names: that version is read and
    recorded on every item (``object_version``), so that reads serve the bytes indexed.
    Without one (re-index, tests), the current version is read and recorded.

    ``refresh`` (the re-index command) also rewrites the attributes of instance
    items this part already owns, so that items written by an older version get
    new attributes; counts are never touched. ``presigned_reads`` fetches the
    member headers through one presigned URL instead of one botocore call each
    (what the Lambda does; in-process moto only intercepts botocore calls).
    """
    started = time.monotonic()
    study_uid, series_uid, part_id = keys.parse_incoming_key(key)
    report = IngestReport(key=key, study_uid=study_uid, series_uid=series_uid, part_id=part_id)
    head = (
        s3.head_object(Bucket=bucket, Key=key, VersionId=version_id)
        if version_id
        else s3.head_object(Bucket=bucket, Key=key)
    )
    metadata = head.get("Metadata", {})
    report.site = (
        metadata.get("gateway-id", "") if keys.is_site(metadata.get("gateway-id", "")) else DEFAULT_SITE
    )
    report.object_size = head["ContentLength"]
    version_id = head.get("VersionId") or version_id
    fetcher = (
        PresignedRangeFetcher(s3, bucket, key, version_id, pool_size=concurrency) if presigned_reads else None
    )
    reader = S3RangeReader(s3, bucket, key, head["ContentLength"], version_id=version_id, fetcher=fetcher)
    try:
        part = open_part(reader)
        report.site = part_format.site_of(part.manifest, metadata)
    except (RejectedPart, part_format.NotASite) as exc:
        report.status, report.reason = "rejected", str(exc)
    else:
        # Members the manifest gives no received_at were received when the object was written:
        # stable across redeliveries and re-index, unlike the time of ingest.
        last_modified = head.get("LastModified")
        written = last_modified.timestamp() if last_modified is not None else time.time()
        _index_part(s3, dynamodb, table_name, bucket, part, report, concurrency, refresh, written, version_id)
    report.bytes_fetched, report.requests = reader.bytes_fetched, reader.requests
    report.seconds = round(time.monotonic() - started, 3)
    _publish_report(s3, bucket, report)
    logger.info("part ingested", extra={"key": key, **report.summary()})
    return report


def read_members(part: Part, concurrency: int) -> Iterator[tuple[Member, bytes]]:
    """Each member with its first block (local header + start of data), fetched ahead in parallel.

    At most ``2 * concurrency`` first blocks are held at once, so memory stays
    bounded whatever the member count; parsing (one thread) overlaps the fetches.
    """
    members = iter(part.members)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="ingest-read") as pool:
        pending: deque[tuple[Member, Future[bytes]]] = deque()

        def submit() -> None:
            member = next(members, None)
            if member is not None:
                start, end = prefetch_range(member)
                held = part.reader.pinned_range(start, end)  # small parts: the tail read holds it all
                future: Future[bytes] = Future()
                if held is not None:
                    future.set_result(held)
                else:
                    future = pool.submit(part.reader.fetch, start, end)
                pending.append((member, future))

        for _ in range(max(1, concurrency) * 2):
            submit()
        while pending:
            member, future = pending.popleft()
            submit()
            yield member, future.result()


def _parse(part: Part, member: Member, first: bytes) -> tuple[InstanceRecord, int]:
    """The member's record and the offset of its data in the object."""
    try:
        with part.open(member, first) as fp:
            return extract(read_header(cast(IO[bytes], fp))), fp.data_offset
    except UnreadableMember as exc:
        raise RejectedMember(str(exc)) from exc


Records = dict[str, tuple[Member, dict[str, Any], InstanceRecord]]


def _index_part(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    table_name: str,
    bucket: str,
    part: Part,
    report: IngestReport,
    concurrency: int,
    refresh: bool = False,
    written: float = 0.0,
    version_id: str | None = None,
) -> None:
    report.members = len(part.members) + len(part.rejected)
    if any(m.dataset_sha256 for m in part.members):
        report.fingerprints = "data set sha256 (manifest)"
    else:
        report.fingerprints = "sha256 (manifest)" if any(m.sha256 for m in part.members) else "crc32+size"
    report.notes.extend(part.notes)
    report.rejected.extend({"member": m, "reason": r} for m, r in part.rejected.items())
    records, headers, first_record = _read_records(
        part, report, concurrency, written or time.time(), version_id
    )
    _check_manifest(part, report)
    if not records or first_record is None:
        report.status = "rejected"
        report.reason = report.reason or "no indexable DICOM instance in the part"
        return

    metadata_key = keys.metadata_key(report.study_uid, report.series_uid, report.part_id)
    s3.put_object(
        Bucket=bucket,
        Key=metadata_key,
        Body=b"[" + b",".join(headers) + b"]",
        ContentType="application/dicom+json",
    )
    del headers

    writer = IndexWriter(dynamodb, table_name, report.site)
    study = writer.claim_study(first_record)
    accepted = _same_patient_or_correction(writer, report, records, study)
    if accepted:
        first = next(iter(accepted.values()))[2]
        if same_patient(first.patient, study.patient_key):
            writer.upsert_study(first)
        writer.ensure_series(first)
        _add_instances(writer, report, accepted, refresh)
    if report.rejected or report.conflict:
        report.status = "partial" if accepted else "conflict"
    writer.record_part(
        report.study_uid,
        report.series_uid,
        {
            "part_id": report.part_id,
            "site": report.site,
            "object_key": report.key,
            "object_version": version_id,
            "metadata_key": metadata_key,
            "report_key": keys.report_key(report.study_uid, report.series_uid, report.part_id),
            "status": report.status,
            "members": report.members,
            "indexed": len(report.indexed),
            "updated": len(report.updated),
            "rejected": len(report.rejected),
            "conflict": len(report.conflict),
            "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _same_patient_or_correction(
    writer: IndexWriter, report: IngestReport, records: Records, study: StudyState
) -> Records:
    """The records that may go into the study; the others are recorded as a patient conflict.

    An instance of another patient than the study's goes in only when it is a new
    version of an instance already indexed (a correction: latest received wins),
    or when an administrator accepted this part's conflict.
    """
    odd = {sop: r for sop, r in records.items() if not same_patient(r[2].patient, study.patient_key)}
    if not odd:
        return records
    if writer.conflict_status(report.study_uid, report.series_uid, report.part_id) == "accepted":
        report.notes.append("patient conflict accepted by an administrator: indexed into the study")
        return records
    kept_out: list[str] = []
    for sop, (member, _item, record) in odd.items():
        if writer.existing_instance(record.study_uid, record.series_uid, sop).part_id:
            continue  # a new version of an indexed instance: a correction
        kept_out.append(sop)
        report.conflict.append(
            {
                "kind": "patient",
                "sop_instance_uid": sop,
                "member": member.name,
                "reason": "the instance's patient (PatientID/IssuerOfPatientID, else PatientName) "
                "differs from its study's: kept out of the study",
            }
        )
    if kept_out:
        record = records[kept_out[0]][2]
        writer.record_conflict(
            record, {"part_id": report.part_id, "object_key": report.key, "sop_uids": kept_out}, study
        )
    return {sop: r for sop, r in records.items() if sop not in kept_out}


def _add_instances(writer: IndexWriter, report: IngestReport, records: Records, refresh: bool) -> None:
    items = {sop_uid: item for sop_uid, (_member, item, _record) in records.items()}
    existing = set(writer.add_instances(report.study_uid, report.series_uid, list(items.values())))
    newest: tuple[float, InstanceRecord] | None = None
    for sop_uid, (member, item, record) in records.items():
        if sop_uid not in existing:
            report.indexed.append(sop_uid)
            continue
        other = writer.existing_instance(report.study_uid, report.series_uid, sop_uid)
        if other.part_id == report.part_id:
            report.redelivered.append(sop_uid)
            # A new object version of this part (an administrator's in-place rewrite): re-pin reads
            # to it, so that they never depend on a noncurrent version the lifecycle expires.
            moved = bool(item.get("object_version")) and other.object_version != item["object_version"]
            if (refresh or moved) and writer.refresh_instance(item):
                report.refreshed += 1
        elif member.same_bytes(other.fingerprint, other.crc_fingerprint, other.dataset_sha256):
            report.duplicate.append(sop_uid)
        else:
            outcome = writer.replace_instance(item)
            getattr(report, outcome).append(sop_uid)
            received = float(item["received_at"])
            if outcome == "updated" and (newest is None or received >= newest[0]):
                newest = (received, record)
    if newest is not None:
        # Latest received wins for study and series attributes too (a corrected PatientName).
        writer.correct_study(newest[1])
        writer.correct_series(newest[1])


def _read_records(
    part: Part, report: IngestReport, concurrency: int, written: float, version_id: str | None = None
) -> tuple[Records, list[bytes], InstanceRecord | None]:
    """Every member's header: (member, index item, header-less record) per SOP UID, JSON texts, first."""
    # Per SOP Instance UID: the member, its index item and its levels, built as soon as it is read.
    records: Records = {}
    received = part_format.received_at(part.manifest)
    negotiated = part_format.transfer_syntaxes(part.manifest)
    first_record: InstanceRecord | None = None
    # Each full header is serialised as soon as it is read: a parsed DICOM JSON header is
    # ~100 KB of Python objects, its JSON text ~5 KB, which keeps 3,000 instances in bounds.
    headers: list[bytes] = []
    for member, first in read_members(part, concurrency):
        try:
            record, data_offset = _parse(part, member, first)
        except RejectedMember as exc:
            report.rejected.append({"member": member.name, "reason": str(exc)})
            continue
        if (record.study_uid, record.series_uid) != (report.study_uid, report.series_uid):
            reason = "instance belongs to another study or series than its part"
            report.rejected.append({"member": member.name, "reason": reason})
            continue
        earlier = records.get(record.sop_uid)
        if earlier is not None:
            _same_uid_twice(report, record.sop_uid, earlier[0], member)
            continue
        headers.append(json.dumps(record.header, ensure_ascii=False, default=str).encode())
        light = replace(record, header={})
        if member.name in negotiated:
            # The transfer syntax negotiated on the association (the gateway's manifest) is the truth.
            light = replace(light, transfer_syntax_uid=negotiated[member.name])
        item = _instance_item(report, light, member, data_offset)
        # The object version the member offsets refer to (a versioned bucket keeps every upload).
        item["object_version"] = version_id
        item["received_at"] = Decimal(str(received.get(member.name, written)))
        records[record.sop_uid] = (member, item, light)
        if first_record is None:
            first_record = light
    return records, headers, first_record


def _check_manifest(part: Part, report: IngestReport) -> None:
    """Note (do not fail on) disagreements between the manifest and the zip's directory."""
    instances = part.manifest.get("instances")
    if not isinstance(instances, list):
        return
    listed = {str(e.get("member")) for e in instances if isinstance(e, dict)}
    present = {m.name for m in part.members}
    missing = sorted(listed - present)
    if missing:
        report.notes.append(f"{len(missing)} member(s) listed in manifest.json are missing from the zip")
    unlisted = present - listed
    if unlisted:
        report.notes.append(f"{len(unlisted)} member(s) are not listed in manifest.json")


def _same_uid_twice(report: IngestReport, sop_uid: str, first: Member, second: Member) -> None:
    if second.same_bytes(first.fingerprint, first.crc_fingerprint, first.dataset_sha256):
        report.duplicate.append(sop_uid)
    else:
        report.conflict.append(
            {
                "kind": "same_uid_in_part",
                "sop_instance_uid": sop_uid,
                "kept_part": report.part_id,
                "kept_member": first.name,
                "kept_fingerprint": first.fingerprint,
                "member": second.name,
                "fingerprint": second.fingerprint,
            }
        )


def _instance_item(
    report: IngestReport, record: InstanceRecord, member: Member, data_offset: int
) -> dict[str, Any]:
    number = record.value(record.instance, "InstanceNumber")
    return {
        "pk": keys.study_pk(report.site, record.study_uid),
        "sk": keys.instance_sk(record.series_uid, record.sop_uid),
        "site": report.site,
        "study_uid": record.study_uid,
        "series_uid": record.series_uid,
        "sop_uid": record.sop_uid,
        "json": json.dumps(record.instance, ensure_ascii=False),
        "SOPClassUID": record.value(record.instance, "SOPClassUID"),
        "InstanceNumber": int(number) if number.lstrip("-").isdigit() else None,
        "transfer_syntax": record.transfer_syntax_uid,
        "part_id": report.part_id,
        "object_key": report.key,
        "member": member.name,
        "fingerprint": member.fingerprint,
        "member_crc32": member.crc_fingerprint,
        # The data set's SHA-256 (manifest): copies under other file meta are the same content.
        **({"dataset_sha256": member.dataset_sha256} if member.dataset_sha256 else {}),
        # Where the member's bytes are: one ranged GET fetches them (WADO-RS retrieval).
        "member_offset": member.header_offset,
        "member_data_offset": data_offset,
        "member_compressed_size": member.compressed_size,
        "member_size": member.size,
        "member_compress_type": member.compress_type,
    }


def _publish_report(s3: S3Client, bucket: str, report: IngestReport) -> None:
    """The report object and the status tag, written at the same time (two requests, one latency)."""
    body = json.dumps({"summary": report.summary(), **asdict(report)}, indent=1)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-tag") as pool:
        tagged = pool.submit(
            s3.put_object_tagging,
            Bucket=bucket,
            Key=report.key,
            Tagging={"TagSet": [{"Key": "ingest-status", "Value": report.status}]},
        )
        s3.put_object(
            Bucket=bucket,
            Key=keys.report_key(report.study_uid, report.series_uid, report.part_id),
            Body=body.encode(),
            ContentType="application/json",
        )
        tagged.result()
