"""Metadata extraction: values as pydicom reads them, person-name groups, search keys, rejections."""

from __future__ import annotations

import io

import pytest
from common.dicom_json import first_text
from common.names import name_words
from ingest.extract import RejectedMember, extract, read_header
from pydicom.data import get_charset_files

from tests.helpers.dicom_factory import encode, pydicom_dataset, pydicom_file


def test_ct_small_values_match_pydicom() -> None:
    ds = pydicom_dataset("CT_small.dcm")
    with open(pydicom_file("CT_small.dcm"), "rb") as fh:
        record = extract(read_header(fh))
    assert record.study_uid == ds.StudyInstanceUID
    assert record.series_uid == ds.SeriesInstanceUID
    assert record.sop_uid == ds.SOPInstanceUID
    assert first_text(record.study, "PatientName") == str(ds.PatientName)
    assert first_text(record.study, "PatientID") == ds.PatientID
    assert first_text(record.study, "StudyDate") == ds.StudyDate
    assert first_text(record.series, "Modality") == "CT"
    assert first_text(record.instance, "Rows") == str(ds.Rows)
    # Pixel data never reaches the stored header.
    assert "7FE00010" not in record.header


def test_japanese_name_keeps_all_three_groups() -> None:
    [path] = get_charset_files("chrH31.dcm")
    with open(path, "rb") as fh:
        record = extract(read_header(fh))
    name = record.study["00100010"]["Value"][0]
    assert name == {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}


def test_name_search_words_fold_case_and_accents_and_split_groups() -> None:
    assert name_words("Müller^Hans=ミュラー^ハンス") == ["muller", "hans", "ミュラー", "ハンス"]
    assert name_words("DOE^JOHN^^DR.") == ["doe", "john", "dr"]


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_instance_without_a_required_uid_is_rejected_with_the_reason(missing: str) -> None:
    ds = pydicom_dataset("CT_small.dcm")
    delattr(ds, missing)
    with pytest.raises(RejectedMember, match=f"missing {missing}"):
        extract(read_header(io.BytesIO(encode(ds))))


def test_bytes_that_are_not_dicom_are_rejected() -> None:
    with pytest.raises(RejectedMember):
        extract(read_header(io.BytesIO(b"%PDF-1.7 definitely not an image" * 10)))
