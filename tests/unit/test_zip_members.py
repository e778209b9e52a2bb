"""common.zip_members: an instance's bytes read from its zip member in S3 (in-process moto).

The one member reader of ingest and the query routes (WADO-RS, frames, rendered).
"""

from __future__ import annotations

import importlib
import io
import zipfile
from types import ModuleType
from typing import Any

import pytest
from common.zip_members import MemberError, MemberLocation, MemberReader, MemberTooLarge

from tests.conftest import BUCKET, TABLE, Aws
from tests.helpers.dicom_factory import encode, series_from, zip_part

KEY = "incoming/1.2.3/1.2.4/p1.zip"


@pytest.fixture
def reader(aws: Aws) -> MemberReader:
    return MemberReader(lambda: aws.s3, BUCKET)


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The route module (its import reads the function's settings from the environment)."""
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    return importlib.import_module("query.routes.rendered")


def counted(aws: Aws) -> list[str]:
    calls: list[str] = []
    aws.s3.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    return calls


def part(members: dict[str, bytes], compression: int) -> tuple[bytes, dict[str, zipfile.ZipInfo]]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as zf:
        infos = {info.filename: info for info in zf.infolist()}
    return buffer.getvalue(), infos


def offset_item(info: zipfile.ZipInfo) -> dict[str, Any]:
    """The member fields ingest records on an instance item (zip local header offset and sizes)."""
    return {
        "object_key": KEY,
        "member": info.filename,
        "member_offset": info.header_offset,
        "member_compressed_size": info.compress_size,
        "member_size": info.file_size,
        "member_compress_type": info.compress_type,
    }


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_member_read_from_recorded_offset_in_one_ranged_get(
    aws: Aws, reader: MemberReader, compression: int
) -> None:
    # GIVEN a part of three instances in S3 and the recorded offset of the second member
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in series_from("CT_small.dcm", 3)}
    body, infos = part(members, compression)
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    name = list(members)[1]
    calls = counted(aws)

    # WHEN the instance's bytes are read
    data = reader.read(MemberLocation.of_item(offset_item(infos[name])))

    # THEN they are exactly the member's, fetched with one ranged GET (local header and data)
    assert data == members[name]
    assert calls == ["GetObject"]
    assert reader.bytes_fetched < infos[name].compress_size + 1024


def test_range_of_a_stored_member_is_one_get_of_just_those_bytes(aws: Aws, reader: MemberReader) -> None:
    # GIVEN a stored part and the data offset ingest records
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in series_from("CT_small.dcm", 2)}
    body, infos = part(members, zipfile.ZIP_STORED)
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    name = list(members)[1]
    info = infos[name]
    data_offset = info.header_offset + 30 + len(name) + len(info.extra)
    location = MemberLocation.of_item({**offset_item(info), "member_data_offset": data_offset})
    calls = counted(aws)

    # WHEN bytes 100..1099 of the member are read
    data = reader.read_range(location, 100, 1099)

    # THEN they are those bytes, from one GET of exactly 1000 bytes
    assert data == members[name][100:1100]
    assert calls == ["GetObject"] and reader.bytes_fetched == 1000
    # AND a range beyond the member is refused
    with pytest.raises(MemberError):
        reader.read_range(location, 0, info.file_size)


def test_limits_refuse_large_members_before_fetching(aws: Aws, reader: MemberReader) -> None:
    members = {"a.dcm": b"\0" * 100_000}
    body, infos = part(members, zipfile.ZIP_DEFLATED)
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    calls = counted(aws)
    # GIVEN the recorded size THEN nothing is fetched
    with pytest.raises(MemberTooLarge):
        reader.read(MemberLocation.of_item(offset_item(infos["a.dcm"])), max_bytes=50_000)
    assert calls == []
    # AND a member whose recorded size lies inflates only up to the limit
    lying = {**offset_item(infos["a.dcm"]), "member_size": 10}
    with pytest.raises(MemberTooLarge):
        reader.read(MemberLocation.of_item(lying), max_bytes=50_000)


def test_member_read_through_the_central_directory_without_offsets(aws: Aws, reader: MemberReader) -> None:
    # GIVEN a part as the gateway writes it and an instance item without member offsets
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in series_from("MR_small.dcm", 4)}
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=zip_part(members, manifest=b"{}"))
    name = list(members)[2]
    calls = counted(aws)

    # WHEN the instance's bytes are read
    data = reader.read(MemberLocation(KEY, name))

    # THEN they are the member's, from one HEAD and ranged GETs (not one GET per byte)
    assert data == members[name]
    assert calls[0] == "HeadObject" and set(calls[1:]) == {"GetObject"} and len(calls) <= 4


def test_missing_member_or_wrong_offset_is_a_member_error(aws: Aws, reader: MemberReader) -> None:
    members = {"a.dcm": encode(series_from("CT_small.dcm", 1)[0])}
    body, infos = part(members, zipfile.ZIP_STORED)
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    with pytest.raises(MemberError):
        reader.read(MemberLocation(KEY, "b.dcm"))
    with pytest.raises(MemberError):
        reader.read(MemberLocation.of_item({**offset_item(infos["a.dcm"]), "member_offset": 7}))
    with pytest.raises(MemberError):
        reader.read(MemberLocation("incoming/none.zip", "a.dcm"))


def test_middle_instance_orders_by_instance_number(
    rendered: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN six instances of a series, listed by the store in UID order, one without a number
    items = [
        {"sop_uid": "1.9", "InstanceNumber": 1},
        {"sop_uid": "1.8", "InstanceNumber": 10},
        {"sop_uid": "1.7", "InstanceNumber": 2},
        {"sop_uid": "1.6", "InstanceNumber": 3},
        {"sop_uid": "1.5", "InstanceNumber": None},
        {"sop_uid": "1.4", "InstanceNumber": 4},
    ]

    class Store:
        def study_children(self, owner: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
            return items

    monkeypatch.setattr(rendered, "store", Store())

    # THEN the middle one by InstanceNumber (1, 2, 3, 4, 10, none) is number 3
    assert rendered.middle_instance({"site": "default", "study_uid": "1.2"}, "1.3")["sop_uid"] == "1.6"
