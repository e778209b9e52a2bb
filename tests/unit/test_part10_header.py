"""The hand-built file header is byte for byte what pynetdicom + pydicom would write, and reads back."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from edge_gateway.part10 import file_header


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # even lengths
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2"),  # odd: padded with NUL
        ("1.2.840.10008.5.1.4.1.1.7", "2.25.1" + "7" * 58, "1.2.840.10008.1.2.4.91"),  # 64 characters
    ],
)
def test_header_matches_pynetdicom(sop_class: str, sop_instance: str, syntax: str) -> None:
    meta = create_file_meta(
        sop_class_uid=UID(sop_class), sop_instance_uid=UID(sop_instance), transfer_syntax=UID(syntax)
    )
    expected = b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
    assert file_header(sop_class, sop_instance, syntax) == expected


def test_header_plus_dataset_is_a_readable_file() -> None:
    dataset = b"\x08\x00\x18\x00UI\x08\x001.2.3.4\x00"  # SOPInstanceUID, explicit VR LE
    ds = dcmread(
        BytesIO(file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1") + dataset)
    )
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"


def test_non_ascii_uid_is_an_error_not_a_mangled_file() -> None:
    with pytest.raises(UnicodeError):
        file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.é", "1.2.840.10008.1.2.1")
