"""query.routes.rendered: an instance's bytes read from its zip member in S3 (in-process moto)."""

from __future__ import annotations

import importlib
import io
import zipfile
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import BUCKET, TABLE, Aws
from tests.dicom_factory import encode, series_from, zip_part

KEY = "incoming/1.2.3/1.2.4/p1.zip"


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
def test_member_read_from_recorded_offset_in_two_ranged_gets(
    aws: Aws, rendered: ModuleType, compression: int
) -> None:
    # GIVEN a part of three instances in S3 and the recorded offset of the second member
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in series_from("CT_small.dcm", 3)}
    body, infos = part(members, compression)
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    name = list(members)[1]
    calls = counted(aws)

    # WHEN the instance's bytes are read
    data = rendered.instance_bytes(aws.s3, BUCKET, offset_item(infos[name]))

    # THEN they are exactly the member's, fetched with two ranged GETs (local header, data)
    assert data == members[name]
    assert calls == ["GetObject", "GetObject"]


def test_member_read_through_the_central_directory_without_offsets(aws: Aws, rendered: ModuleType) -> None:
    # GIVEN a part as the gateway writes it and an instance item without member offsets
    members = {f"{ds.SOPInstanceUID}.dcm": encode(ds) for ds in series_from("MR_small.dcm", 4)}
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=zip_part(members, manifest=b"{}"))
    name = list(members)[2]
    calls = counted(aws)

    # WHEN the instance's bytes are read
    data = rendered.instance_bytes(aws.s3, BUCKET, {"object_key": KEY, "member": name})

    # THEN they are the member's, from one HEAD and ranged GETs (not one GET per byte)
    assert data == members[name]
    assert calls[0] == "HeadObject" and set(calls[1:]) == {"GetObject"} and len(calls) <= 4


def test_missing_member_or_wrong_offset_is_a_member_error(aws: Aws, rendered: ModuleType) -> None:
    members = {"a.dcm": encode(series_from("CT_small.dcm", 1)[0])}
    body, infos = part(members, zipfile.ZIP_STORED)
    aws.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    with pytest.raises(rendered.MemberError):
        rendered.instance_bytes(aws.s3, BUCKET, {"object_key": KEY, "member": "b.dcm"})
    with pytest.raises(rendered.MemberError):
        rendered.instance_bytes(aws.s3, BUCKET, {**offset_item(infos["a.dcm"]), "member_offset": 7})
    with pytest.raises(rendered.MemberError):
        rendered.instance_bytes(aws.s3, BUCKET, {"object_key": "incoming/none.zip", "member": "a.dcm"})


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
