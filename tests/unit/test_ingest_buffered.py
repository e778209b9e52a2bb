"""The buffered header read (pydicom over the first block in memory) gives what the full path gives.

``extract.read_header`` parses a STORED member's first block through a
``BytesIO`` and keeps the result only when the parse provably stayed inside the
block; otherwise it falls back to the bounded, checking member stream. Every
file pydicom ships, stored uncompressed, must come out the same both ways.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from ingest import extract
from ingest.extract import InstanceRecord, RejectedMember
from ingest.process import _parse
from ingest.zip_part import Part, open_part, prefetch_range
from pydicom.dataset import Dataset

from tests.helpers.dicom_factory import encode, pydicom_bundled_files, pydicom_dataset
from tests.helpers.ingest_support import reader_over

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FILES = pydicom_bundled_files(charsets=True)


def _stored_part(members: dict[str, bytes]) -> Part:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return open_part(reader_over(buffer.getvalue()))


def _outcome(part: Part, name: str) -> tuple[str, Any]:
    [member] = [m for m in part.members if m.name == name]
    try:
        record, offset = _parse(part, member, part.reader.fetch(*prefetch_range(member)))
    except RejectedMember as exc:
        return "rejected", str(exc)
    return "indexed", (_record_json(record), offset)


def _record_json(record: InstanceRecord) -> str:
    return json.dumps(
        [record.study_uid, record.series_uid, record.sop_uid, record.transfer_syntax_uid, record.header],
        sort_keys=True,
        default=str,
    )


class _Counting:
    """Wraps ``_read_buffered``: how often it kept its result, or turns it off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.kept = 0
        self.original = extract._read_buffered

    def __call__(self, head: bytes) -> Dataset | None:
        if not self.enabled:
            return None
        ds = self.original(head)
        self.kept += ds is not None
        return ds


def test_every_pydicom_file_reads_the_same_with_and_without_the_buffered_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN every file pydicom ships, as STORED members (the gateway's default)
    names = {f"{i:04d}.dcm": path for i, path in enumerate(FILES)}
    part = _stored_part({name: path.read_bytes() for name, path in names.items()})
    # WHEN each member is read with the buffered path, then with it turned off
    fast = _Counting(enabled=True)
    monkeypatch.setattr(extract, "_read_buffered", fast)
    with_buffer = {name: _outcome(part, name) for name in names}
    monkeypatch.setattr(extract, "_read_buffered", _Counting(enabled=False))
    without = {name: _outcome(part, name) for name in names}
    # THEN every outcome (header JSON, data offset, or rejection reason) is identical
    differing = [str(names[n].name) for n in names if with_buffer[n] != without[n]]
    assert differing == []
    # AND the buffered path was really taken for many of them, and some were indexed, some rejected
    assert fast.kept >= 50
    kinds = {kind for kind, _ in with_buffer.values()}
    assert kinds == {"indexed", "rejected"}


def _ct_with_private_block(size: int) -> bytes:
    ds = pydicom_dataset("CT_small.dcm")
    ds.add_new(0x00290010, "LO", "VENDOR")
    ds.add_new(0x00291010, "OB", bytes(size))
    return encode(ds)


@pytest.mark.parametrize("private_kb", [0, 15, 40, 200])
def test_headers_longer_than_the_first_block_fall_back_and_read_the_same(
    monkeypatch: pytest.MonkeyPatch, private_kb: int
) -> None:
    # GIVEN a CT header whose private block makes it shorter or longer than the 16 KB first block
    part = _stored_part({"a.dcm": _ct_with_private_block(private_kb * 1024)})
    fast = _Counting(enabled=True)
    monkeypatch.setattr(extract, "_read_buffered", fast)
    # WHEN it is read with and without the buffered path
    with_buffer = _outcome(part, "a.dcm")
    monkeypatch.setattr(extract, "_read_buffered", _Counting(enabled=False))
    without = _outcome(part, "a.dcm")
    # THEN it is indexed the same either way, and the buffered result is kept only when it fits
    assert with_buffer[0] == "indexed"
    assert with_buffer == without
    assert fast.kept == (1 if private_kb < 15 else 0)


@pytest.mark.parametrize("cut", [13, 21, 200, 2000])
def test_a_member_cut_inside_its_header_reads_as_on_the_full_path(
    monkeypatch: pytest.MonkeyPatch, cut: int
) -> None:
    # GIVEN a member whose bytes end inside the header, ``cut`` bytes before its pixel data value
    data = _ct_with_private_block(0)
    value_start = data.index(b"\xe0\x7f\x10\x00OW") + 12  # CT_small: explicit VR little endian
    part = _stored_part({"a.dcm": data[: value_start - cut]})
    fast = _Counting(enabled=True)
    monkeypatch.setattr(extract, "_read_buffered", fast)
    # WHEN it is read with and without the buffered path
    with_buffer = _outcome(part, "a.dcm")
    monkeypatch.setattr(extract, "_read_buffered", _Counting(enabled=False))
    without = _outcome(part, "a.dcm")
    # THEN the buffered parse (which cannot reach the pixel data) is not kept: same outcome
    assert fast.kept == 0
    assert with_buffer == without
    if cut in (13, 200):  # inside an element: the full path's truncation check rejects it
        assert with_buffer == ("rejected", "truncated DICOM header")
