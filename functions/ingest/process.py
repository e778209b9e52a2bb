"""Ingest one series part: read headers from the zip in S3, index them, write the report.

Order matters for retries: the DICOM JSON headers go to S3 first, then the
index (conditional, so a retry after a crash finishes the work without counting
twice), then the report and the object tag that a person reads in the console.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any, cast

from common import keys
from common.observability import logger

from ingest.extract import InstanceRecord, RejectedMember, extract, read_header
from ingest.index_writer import IndexWriter
from ingest.s3_reader import S3RangeReader
from ingest.zip_part import Member, Part, RejectedPart, open_part

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

DEFAULT_SITE = "default"


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
    conflict: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    bytes_fetched: int = 0
    requests: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "members": self.members,
            "indexed": len(self.indexed),
            "redelivered": len(self.redelivered),
            "duplicate": len(self.duplicate),
            "conflict": len(self.conflict),
            "rejected": len(self.rejected),
            "bytes_fetched": self.bytes_fetched,
            "requests": self.requests,
        }


def ingest_object(
    s3: S3Client, dynamodb: DynamoDBClient, table_name: str, bucket: str, key: str
) -> IngestReport:
    started = time.monotonic()
    study_uid, series_uid, part_id = keys.parse_incoming_key(key)
    report = IngestReport(key=key, study_uid=study_uid, series_uid=series_uid, part_id=part_id)
    head = s3.head_object(Bucket=bucket, Key=key)
    report.site = _site(head.get("Metadata", {}))
    reader = S3RangeReader(s3, bucket, key, head["ContentLength"], version_id=head.get("VersionId"))
    try:
        part = open_part(cast(IO[bytes], reader))
    except RejectedPart as exc:
        report.status, report.reason = "rejected", str(exc)
    else:
        report.site = str(part.manifest.get("gateway_id") or report.site)
        _index_part(s3, dynamodb, table_name, bucket, part, report)
    report.bytes_fetched, report.requests = reader.bytes_fetched, reader.requests
    report.seconds = round(time.monotonic() - started, 3)
    _publish_report(s3, bucket, report)
    logger.info("part ingested", extra={"key": key, **report.summary()})
    return report


def _site(metadata: dict[str, str]) -> str:
    return metadata.get("gateway-id") or DEFAULT_SITE


def _index_part(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    table_name: str,
    bucket: str,
    part: Part,
    report: IngestReport,
) -> None:
    report.members = len(part.members) + len(part.rejected)
    report.rejected.extend({"member": m, "reason": r} for m, r in part.rejected.items())
    records: dict[str, tuple[InstanceRecord, Member]] = {}
    for member in part.members:
        try:
            with part.open(member) as fp:
                record = extract(read_header(fp))
        except RejectedMember as exc:
            report.rejected.append({"member": member.name, "reason": str(exc)})
            continue
        if (record.study_uid, record.series_uid) != (report.study_uid, report.series_uid):
            reason = "instance belongs to another study or series than its part"
            report.rejected.append({"member": member.name, "reason": reason})
            continue
        earlier = records.get(record.sop_uid)
        if earlier is not None:
            _same_uid_twice(report, record.sop_uid, earlier[1], member)
            continue
        records[record.sop_uid] = (record, member)
    if not records:
        report.status = "rejected"
        report.reason = report.reason or "no indexable DICOM instance in the part"
        return

    metadata_key = keys.metadata_key(report.study_uid, report.series_uid, report.part_id)
    headers = [record.header for record, _ in records.values()]
    s3.put_object(
        Bucket=bucket,
        Key=metadata_key,
        Body=json.dumps(headers, ensure_ascii=False).encode(),
        ContentType="application/dicom+json",
    )

    writer = IndexWriter(dynamodb, table_name, report.site)
    first = next(iter(records.values()))[0]
    writer.upsert_study(first)
    writer.ensure_series(first)
    items = [_instance_item(report, record, member) for record, member in records.values()]
    existing = set(writer.add_instances(report.study_uid, report.series_uid, items))
    for sop_uid, (_record, member) in records.items():
        if sop_uid not in existing:
            report.indexed.append(sop_uid)
            continue
        other = writer.existing_instance(report.study_uid, report.series_uid, sop_uid)
        if other.part_id == report.part_id:
            report.redelivered.append(sop_uid)
        elif other.fingerprint == member.fingerprint:
            report.duplicate.append(sop_uid)
        else:
            report.conflict.append(
                {"sop_instance_uid": sop_uid, "kept_part": other.part_id, "member": member.name}
            )
    if report.rejected or report.conflict:
        report.status = "partial"
    writer.record_part(
        report.study_uid,
        report.series_uid,
        {
            "part_id": report.part_id,
            "site": report.site,
            "object_key": report.key,
            "metadata_key": metadata_key,
            "report_key": keys.report_key(report.study_uid, report.series_uid, report.part_id),
            "status": report.status,
            "members": report.members,
            "indexed": len(report.indexed),
            "rejected": len(report.rejected),
            "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _same_uid_twice(report: IngestReport, sop_uid: str, first: Member, second: Member) -> None:
    if first.fingerprint == second.fingerprint:
        report.duplicate.append(sop_uid)
    else:
        report.conflict.append(
            {"sop_instance_uid": sop_uid, "kept_member": first.name, "member": second.name}
        )


def _instance_item(report: IngestReport, record: InstanceRecord, member: Member) -> dict[str, Any]:
    number = record.value(record.instance, "InstanceNumber")
    return {
        "pk": keys.study_pk(record.study_uid),
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
    }


def _publish_report(s3: S3Client, bucket: str, report: IngestReport) -> None:
    body = json.dumps({"summary": report.summary(), **asdict(report)}, indent=1)
    s3.put_object(
        Bucket=bucket,
        Key=keys.report_key(report.study_uid, report.series_uid, report.part_id),
        Body=body.encode(),
        ContentType="application/json",
    )
    s3.put_object_tagging(
        Bucket=bucket,
        Key=report.key,
        Tagging={"TagSet": [{"Key": "ingest-status", "Value": report.status}]},
    )
