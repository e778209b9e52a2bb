"""The data set digest: the same data set under different File Meta Information is the same content."""

from __future__ import annotations

import hashlib
from io import BytesIO

from common.dataset_digest import HEAD, DatasetDigest, dataset_offset, dataset_sha256
from pydicom.dataset import Dataset

from tests.helpers.dicom_factory import encode, series_from


def _with_meta(ds: Dataset, implementation_uid: str, source_ae: str) -> bytes:
    ds.file_meta.ImplementationClassUID = implementation_uid
    ds.file_meta.SourceApplicationEntityTitle = source_ae
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_same_data_set_under_other_meta_has_the_same_digest_and_other_bytes_another() -> None:
    [ds] = series_from("CT_small.dcm", 1)
    first = _with_meta(ds, "1.2.3.4", "GATEWAY")
    second = _with_meta(ds, "1.2.3.4.5.6", "IMPORTER")
    assert hashlib.sha256(first).digest() != hashlib.sha256(second).digest()
    assert dataset_sha256(first) == dataset_sha256(second)
    offset = dataset_offset(first[:HEAD])
    assert first[offset:] == second[dataset_offset(second[:HEAD]) :]
    assert first[offset : offset + 2] == b"\x08\x00"  # the data set's first tag, group 0008

    ds.PatientName = "Other^Name"
    assert dataset_sha256(_with_meta(ds, "1.2.3.4", "GATEWAY")) != dataset_sha256(first)


def test_chunks_of_any_size_give_the_digest_of_the_whole() -> None:
    data = encode(series_from("CT_small.dcm", 1)[0]) + b"\0" * (2 * HEAD)  # longer than HEAD
    for size in (1, 7, 131, 4096, HEAD + 1):
        digest = DatasetDigest()
        for start in range(0, len(data), size):
            digest.update(data[start : start + size])
        assert digest.hexdigest() == dataset_sha256(data)


def test_bytes_that_are_no_part10_file_are_hashed_whole() -> None:
    for data in (b"", b"v1", b"\0" * 128 + b"DICX" + b"\2\0" * 10, b"\0" * 128 + b"DICM\x02\x00\x01"):
        assert dataset_sha256(data) == hashlib.sha256(data).hexdigest()
