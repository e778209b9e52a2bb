"""Hostile or broken objects under incoming/: refused or bounded, reported, nothing written elsewhere."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
import zlib

from common import keys
from ingest.process import IngestReport, ingest_object
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.conftest import Aws
from tests.helpers.dicom_factory import encode, series_from, zip_part

STUDY, SERIES = "1.2.3", "1.2.3.4"


def raw_zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip written by hand: (name, stored bytes, method, declared uncompressed size) per member.

    The declared size goes into the central directory as is (zip64 extra when it
    needs 64 bits), whatever the real data inflates to: a liar's zip.
    """
    out = io.BytesIO()
    central = io.BytesIO()
    for name, data, method, declared in entries:
        offset = out.tell()
        encoded = name.encode()
        crc = zlib.crc32(data) if method == zipfile.ZIP_STORED else 0
        out.write(
            struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 45, 0, 0, method, 0, 0x21, crc, 0, 0, len(encoded), 0)
        )
        out.write(encoded + data)
        extra = b""
        usize, csize = declared, len(data)
        if declared >= 0xFFFFFFFF:
            extra = struct.pack("<2H2Q", 1, 16, declared, len(data))
            usize = csize = 0xFFFFFFFF
        central.write(
            struct.pack(
                "<4s4B4HL2L5H2L",
                b"PK\x01\x02",
                45,
                3,
                45,
                0,
                0,
                method,
                0,
                0x21,
                crc,
                csize,
                usize,
                len(encoded),
                len(extra),
                0,
                0,
                0,
                0,
                offset,
            )
        )
        central.write(encoded + extra)
    cd = central.getvalue()
    cd_offset = out.tell()
    out.write(cd)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cd), cd_offset, 0))
    return out.getvalue()


def ingest_body(aws: Aws, body: bytes) -> IngestReport:
    key = keys.incoming_key(STUDY, SERIES, "p1")
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=body)
    return ingest_object(aws.s3, aws.dynamodb, aws.table, aws.bucket, key)


def good_instance() -> Dataset:
    [ds] = series_from("CT_small.dcm", 1)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    return ds


def bucket_keys(aws: Aws) -> set[str]:
    return {o["Key"] for o in aws.s3.list_objects_v2(Bucket=aws.bucket).get("Contents", [])}


def assert_reported(aws: Aws, status: str) -> None:
    body = aws.s3.get_object(Bucket=aws.bucket, Key=keys.report_key(STUDY, SERIES, "p1"))["Body"].read()
    assert status in body.decode()
    tags = aws.s3.get_object_tagging(Bucket=aws.bucket, Key=keys.incoming_key(STUDY, SERIES, "p1"))["TagSet"]
    assert {"Key": "ingest-status", "Value": status} in tags


def test_a_hundred_thousand_tiny_members_are_refused_from_the_end_record_alone(aws: Aws) -> None:
    # GIVEN a real zip of 100,000 empty members (9 MB of central directory)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(100_000):
            zf.writestr(f"{i}.dcm", b"")
    # WHEN it is ingested
    report = ingest_body(aws, buffer.getvalue())
    # THEN it is refused after one ranged GET of the tail, not after reading the directory
    assert report.status == "rejected"
    assert "too many members: 100000" in report.reason
    assert report.requests == 1
    assert report.bytes_fetched <= 70 * 1024
    assert_reported(aws, "rejected")


def test_declared_zip_bomb_and_ten_gigabyte_member_are_refused_the_rest_indexed(aws: Aws) -> None:
    good = good_instance()
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    small = bomb.compress(bytes(1024 * 1024)) + bomb.flush()
    body = raw_zip(
        [
            ("bomb.dcm", small, zipfile.ZIP_DEFLATED, 3_900_000_000),  # ratio far beyond the limit
            ("huge.dcm", b"x" * 100, zipfile.ZIP_STORED, 10 * 1024**3),  # claims 10 GB
            ("good.dcm", encode(good), zipfile.ZIP_STORED, len(encode(good))),
        ]
    )
    report = ingest_body(aws, body)
    reasons = {r["member"]: r["reason"] for r in report.rejected}
    assert "zip bomb" in reasons["bomb.dcm"]
    assert "member too large: 10737418240" in reasons["huge.dcm"]
    assert report.indexed == [good.SOPInstanceUID]
    assert report.status == "partial"
    assert report.bytes_fetched < 64 * 1024
    assert_reported(aws, "partial")


def test_a_member_inflating_beyond_its_declared_size_is_read_no_further(aws: Aws) -> None:
    # GIVEN a member that declares 1 MB but inflates to 64 MB of zeros (ratio looks harmless)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    liar = deflater.compress(bytes(64 * 1024 * 1024)) + deflater.flush()
    body = raw_zip([("liar.dcm", liar, zipfile.ZIP_DEFLATED, 1024 * 1024)])
    tracemalloc.start()
    try:
        report = ingest_body(aws, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN it is rejected, and at most the declared megabyte was ever inflated
    assert report.status == "rejected"
    assert report.rejected[0]["member"] == "liar.dcm"
    assert "not DICOM" in report.rejected[0]["reason"]
    assert peak < 16 * 1024 * 1024


def test_a_header_larger_than_the_budget_is_refused_without_reading_it(aws: Aws) -> None:
    # GIVEN an instance with a 40 MB private element before its pixel data
    ds = good_instance()
    ds.add_new(0x00091010, "OB", bytes(40 * 1024 * 1024))
    ds.add_new(0x00090010, "LO", "ACME")
    data = encode(ds)
    report = ingest_body(aws, zip_part({"big.dcm": data}))
    assert report.status == "rejected"
    assert "header larger than 32 MiB" in report.rejected[0]["reason"]
    assert report.bytes_fetched < 2 * 1024 * 1024


def test_path_traversal_names_are_rejected_and_nothing_is_written_outside_the_prefixes(aws: Aws) -> None:
    good = good_instance()
    payload = encode(good_instance())
    names = ["../../escape.dcm", "/etc/passwd", "..\\windows.dcm", "sub/dir.dcm", "C:evil.dcm"]
    body = raw_zip(
        [(n, payload, zipfile.ZIP_STORED, len(payload)) for n in names]
        + [("good.dcm", encode(good), zipfile.ZIP_STORED, len(encode(good)))]
    )
    report = ingest_body(aws, body)
    reasons = {r["member"]: r["reason"] for r in report.rejected}
    assert set(reasons) == set(names)
    assert all("unsafe member name" in reasons[n] or "sub-folder" in reasons[n] for n in names)
    assert report.indexed == [good.SOPInstanceUID]
    assert bucket_keys(aws) == {
        keys.incoming_key(STUDY, SERIES, "p1"),
        keys.metadata_key(STUDY, SERIES, "p1"),
        keys.report_key(STUDY, SERIES, "p1"),
    }


def test_truncated_zip_and_garbage_tail_are_rejected_with_a_report(aws: Aws) -> None:
    body = zip_part({"a.dcm": encode(good_instance())})
    report = ingest_body(aws, body[: len(body) // 2])
    assert report.status == "rejected" and "not a zip" in report.reason
    assert_reported(aws, "rejected")


def test_a_member_whose_local_header_lies_is_rejected(aws: Aws) -> None:
    good = good_instance()
    data = encode(good)
    body = bytearray(raw_zip([("a.dcm", data, zipfile.ZIP_STORED, len(data)), ("b.dcm", data, 0, len(data))]))
    body[0:4] = b"XXXX"  # first local header signature destroyed
    report = ingest_body(aws, bytes(body))
    reasons = {r["member"]: r["reason"] for r in report.rejected}
    assert reasons == {"a.dcm": "bad zip local header"}
    assert report.indexed == [good.SOPInstanceUID]


def test_an_instance_of_another_series_is_rejected(aws: Aws) -> None:
    stray = good_instance()
    stray.SeriesInstanceUID = generate_uid()
    report = ingest_body(aws, zip_part({"stray.dcm": encode(stray)}))
    assert report.status == "rejected"
    assert "another study or series" in report.rejected[0]["reason"]
