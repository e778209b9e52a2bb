"""edge_gateway.archive_client.Archive.fetch: retrieve reads ahead, adjacent members of a part in one
ranged GET, the retrieve cache first, and a failed read costs only the instances it covered
(in-process moto)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from common.zip_members import data_start
from pydicom.uid import generate_uid
from query.store import IndexStore

from edge_gateway import archive_client
from edge_gateway.archive_client import Archive
from edge_gateway.retrieve_cache import RetrieveCache
from edge_gateway.retrieve_sender import Retrieved
from tests.conftest import BUCKET, TABLE, Aws

KEY = "incoming/1.2.3/1.2.4/p1.zip"
SYNTAX = "1.2.840.10008.1.2.1"


def _part(aws: Aws, members: dict[str, bytes], key: str = KEY) -> list[dict[str, Any]]:
    """A STORED part in the bucket and the instance items ingest would record for it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    body = buffer.getvalue()
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    items = []
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        for info in zf.infolist():
            items.append(
                {
                    "object_key": key,
                    "member": info.filename,
                    "member_offset": info.header_offset,
                    "member_data_offset": data_start(body[info.header_offset :], info.header_offset),
                    "member_compressed_size": info.compress_size,
                    "member_size": info.file_size,
                    "member_compress_type": 0,
                    "sop_uid": info.filename.removesuffix(".dcm"),
                    "fingerprint": f"fp-{info.filename}",
                    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                    "transfer_syntax": SYNTAX,
                }
            )
    return items


def _archive(aws: Aws, cache: RetrieveCache | None = None) -> Archive:
    return Archive(IndexStore(aws.dynamodb, TABLE), lambda: aws.s3, BUCKET, ("site",), cache)


def _members(count: int, size: int = 1000) -> dict[str, bytes]:
    return {f"{generate_uid()}.dcm": bytes([n]) * size for n in range(count)}


def test_adjacent_members_come_with_one_ranged_get_then_from_the_cache(aws: Aws, tmp_path: Path) -> None:
    # GIVEN a part of five members and an archive with a retrieve cache
    members = _members(5)
    items = _part(aws, members)
    archive = _archive(aws, RetrieveCache(tmp_path / "cache", 10**8))
    # WHEN all five are fetched
    fetched = list(archive.fetch(items))
    # THEN they come in order with their bytes, from ONE ranged GET, and are cached
    assert [item["sop_uid"] for item, _ in fetched] == [i["sop_uid"] for i in items]
    for (_, got), data in zip(fetched, members.values(), strict=True):
        assert isinstance(got, Retrieved)
        assert got.data == data
        assert got.transfer_syntax == SYNTAX
        assert got.path is not None and got.path.read_bytes() == data
    assert archive.objects.requests == 1
    # WHEN fetched again THEN every one is its cache file, no GET
    again = list(archive.fetch(items))
    assert archive.objects.requests == 1
    assert all(
        isinstance(got, Retrieved) and got.data == data
        for (_, got), data in zip(again, members.values(), strict=True)
    )


def test_runs_are_bounded_and_split_by_part(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_client, "RUN_BYTES", 2500)  # two 1000-byte members (+ headers) per run
    first = _part(aws, _members(4))
    second = _part(aws, _members(1), key="incoming/1.2.3/1.2.4/p2.zip")
    archive = _archive(aws)
    fetched = list(archive.fetch([*first, *second]))
    assert all(isinstance(got, Retrieved) for _, got in fetched)
    assert archive.objects.requests == 3  # 2 + 2 members of p1, then p2


def test_a_missing_part_fails_only_its_instances(aws: Aws) -> None:
    good = _part(aws, _members(2))
    gone = [
        {**item, "object_key": "incoming/1.2.3/1.2.4/gone.zip"}
        for item in _part(aws, _members(2), key="x.zip")
    ]
    fetched = list(_archive(aws).fetch([*gone, *good]))
    assert [isinstance(got, Exception) for _, got in fetched] == [True, True, False, False]
