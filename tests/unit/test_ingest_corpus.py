"""Every file pydicom ships (test_files and charset_files), read the way ingest reads it.

Each file becomes a member of one zip, read through the ranged reader and the
bounded member streams, exactly as a part in S3 is read. Every member is either
indexed with the values pydicom itself reads from the complete file, or rejected
with a reason that quotes no patient data. Nothing crashes.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import pytest
from common.dicom_dates import normalise_date
from common.dicom_json import first_text
from common.names import name_words
from common.uids import is_valid_uid, strip_padding
from ingest.extract import BULK_DATA_THRESHOLD, InstanceRecord, RejectedMember, _bulk_uri
from ingest.fast_json import to_json_dict as fast_to_json
from ingest.process import _parse
from ingest.zip_part import Part, open_part, prefetch_range
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataset import Dataset

from tests.helpers.ingest_support import reader_over

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on non-DICOM files

FILES = sorted(
    {Path(f) for f in [*get_testdata_files(), *get_charset_files()] if os.path.isfile(f)},
    key=lambda p: (p.parent.name, p.name),
)
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@pytest.fixture(scope="module")
def corpus() -> tuple[Part, dict[str, Path]]:
    """One zip holding every file (deflated, as a gateway configured for deflate would write it)."""
    buffer = io.BytesIO()
    names: dict[str, Path] = {}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, path in enumerate(FILES):
            name = f"{i:04d}.dcm"
            names[name] = path
            zf.writestr(name, path.read_bytes())
    return open_part(reader_over(buffer.getvalue())), names


def _ingest_member(part: Part, name: str) -> InstanceRecord | str:
    [member] = [m for m in part.members if m.name == name]
    try:
        record, _offset = _parse(part, member, part.reader.fetch(*prefetch_range(member)))
    except RejectedMember as exc:
        return str(exc)
    return record


def _pydicom(path: Path) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(path, force=True)
    except Exception:
        return None


def _phi(ds: Dataset | None) -> list[str]:
    if ds is None:
        return []
    values = [str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "PatientBirthDate")]
    return [v for v in values if len(v) >= 3]


def test_the_corpus_is_the_whole_of_pydicoms_test_data() -> None:
    # GIVEN pydicom's bundled data: a run with a handful of files would prove little.
    assert len(FILES) >= 150
    assert any(p.name == "chrH31.dcm" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_file_is_indexed_with_pydicoms_values_or_rejected_with_a_reason(
    corpus: tuple[Part, dict[str, Path]], path: Path
) -> None:
    part, names = corpus
    [name] = [n for n, p in names.items() if p == path]
    # WHEN ingest reads the member
    outcome = _ingest_member(part, name)
    ds = _pydicom(path)
    if isinstance(outcome, str):
        # THEN a rejection says why, without patient data
        assert outcome
        for value in _phi(ds):
            assert value not in outcome
        if ds is not None and all(str(ds.get(k, "") or "").strip() for k in UIDS):
            # pydicom sees all three UIDs: only a DICOMDIR, a truncated or oversized header, or a UID
            # that breaks the one UID rule (common.uids) may be refused.
            uids_ok = all(is_valid_uid(strip_padding(str(ds.get(k)))) for k in UIDS)
            allowed = ("DICOMDIR", "truncated", "larger than") if uids_ok else ("UID",)
            assert any(w in outcome for w in allowed), outcome
        return
    # THEN an indexed member has the values pydicom reads from the complete file
    assert ds is not None
    assert outcome.study_uid == str(ds.StudyInstanceUID).strip(" \x00")
    assert outcome.series_uid == str(ds.SeriesInstanceUID).strip(" \x00")
    assert outcome.sop_uid == str(ds.SOPInstanceUID).strip(" \x00")
    assert first_text(outcome.study, "PatientName") == str(ds.get("PatientName", "") or "")
    assert first_text(outcome.study, "PatientID") == str(ds.get("PatientID", "") or "").strip()
    assert first_text(outcome.series, "Modality") == str(ds.get("Modality", "") or "").strip()
    # the index holds dates normalised for matching (ACR-NEMA 1997.04.24 -> 19970424)
    assert first_text(outcome.study, "StudyDate") == normalise_date(str(ds.get("StudyDate", "") or ""))
    # and the stored header never carries pixel data inline
    pixel = outcome.header.get("7FE00010", {})
    assert "InlineBinary" not in pixel and "Value" not in pixel


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("DICOMDIR", "DICOMDIR"),
        ("rtplan_truncated.dcm", "truncated DICOM header"),
        ("README.txt", "not DICOM"),
        ("zipMR.gz", "not DICOM"),
    ],
)
def test_known_bad_files_are_rejected_with_the_right_reason(
    corpus: tuple[Part, dict[str, Path]], name: str, reason: str
) -> None:
    part, names = corpus
    member = next(n for n, p in names.items() if p.name == name)
    outcome = _ingest_member(part, member)
    assert isinstance(outcome, str)
    assert reason in outcome


@pytest.mark.parametrize(
    "name",
    [
        "ExplVR_BigEnd.dcm",  # big endian
        "image_dfl.dcm",  # deflated transfer syntax
        "ExplVR_BigEndNoMeta.dcm",  # big endian without file meta
        "JPEG2000.dcm",
        "MR_small_RLE.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_rle_2frame.dcm",  # multi-frame
        "rtplan.dcm",  # large sequences, no pixel data
        "MR_small_implicit.dcm",
    ],
)
def test_unusual_encodings_are_indexed(corpus: tuple[Part, dict[str, Path]], name: str) -> None:
    part, names = corpus
    member = next(n for n, p in names.items() if p.name == name)
    outcome = _ingest_member(part, member)
    assert isinstance(outcome, InstanceRecord), outcome


CHARSETS = {
    # file: (alphabetic, ideographic, phonetic) as pydicom decodes them, and a folded search word
    "chrArab.dcm": ("قباني^لنزار", "", "", "لنزار"),
    "chrFren.dcm": ("Buc^Jérôme", "", "", "jerome"),
    "chrGerm.dcm": ("Äneas^Rüdiger", "", "", "aneas"),
    "chrGreek.dcm": ("Διονυσιος", "", "", "διονυσιοσ"),
    "chrHbrw.dcm": ("שרון^דבורה", "", "", "דבורה"),
    # The file mixes Latin lookalikes into the Cyrillic (as pydicom's own test data does).
    "chrRuss.dcm": ("Люкceмбypг", "", "", "люкceмбypг"),  # noqa: RUF001
    "chrH31.dcm": ("Yamada^Tarou", "山田^太郎", "やまだ^たろう", "やまだ"),
    "chrH32.dcm": ("ﾔﾏﾀﾞ^ﾀﾛｳ", "山田^太郎", "やまだ^たろう", "ヤマダ"),
    "chrI2.dcm": ("Hong^Gildong", "洪^吉洞", "홍^길동", "길동"),
    "chrKoreanMulti.dcm": ("김희중", "", "", "김희중"),
    "chrX1.dcm": ("Wang^XiaoDong", "王^小東", "", "xiaodong"),
    "chrX2.dcm": ("Wang^XiaoDong", "王^小东", "", "小东"),
}


@pytest.mark.parametrize("name", sorted(CHARSETS))
def test_character_sets_are_decoded_and_name_groups_kept(
    corpus: tuple[Part, dict[str, Path]], name: str
) -> None:
    part, names = corpus
    member = next(n for n, p in names.items() if p.name == name and p.parent.name == "charset_files")
    record = _ingest_member(part, member)
    assert isinstance(record, InstanceRecord), record
    alphabetic, ideographic, phonetic, word = CHARSETS[name]
    pn = record.study["00100010"]["Value"][0]
    assert pn.get("Alphabetic", "") == alphabetic
    assert pn.get("Ideographic", "") == ideographic
    assert pn.get("Phonetic", "") == phonetic
    assert word in name_words(first_text(record.study, "PatientName"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fast_dicom_json_equals_pydicoms_on_every_file(path: Path) -> None:
    # GIVEN a header as ingest reads it (pixel data left out)
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        pytest.skip("pydicom cannot read it at all (rejected by ingest, see above)")
    expected = {}
    for tag in ds.keys():  # noqa: SIM118 - tags, as pydicom's own to_json_dict iterates
        try:
            expected[f"{tag:08X}"] = ds[tag].to_json_dict(_bulk_uri, BULK_DATA_THRESHOLD)
        except Exception:  # noqa: S112 - pydicom cannot encode it; ingest leaves it out too
            continue
    fresh = dcmread(path, stop_before_pixels=True, force=True)
    # WHEN the fast encoder writes it THEN it is pydicom's DICOM JSON, value for value
    assert json.loads(json.dumps(fast_to_json(fresh, BULK_DATA_THRESHOLD, _bulk_uri))) == json.loads(
        json.dumps(expected)
    )
