"""Routing UIDs: the byte walker agrees with pydicom on every file pydicom ships, and defers when unsure."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from edge_gateway import dicom_peek
from edge_gateway.dicom_peek import Undecodable, routing_uids
from tests.helpers.dicom_factory import pydicom_bundled_files


def _raw_dataset(path: str) -> tuple[bytes, str] | None:
    """The encoded dataset after the file meta, as a C-STORE carries it, and its transfer syntax."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except Exception:
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta or "FileMetaInformationGroupLength" not in meta:
        return None
    data = Path(path).read_bytes()
    offset = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    if data[128:132] != b"DICM":
        return None
    return data[offset:], str(meta.TransferSyntaxUID)


def _pydicom_answer(raw: bytes, syntax: str) -> tuple[str, str, str] | str:
    try:
        return tuple(dicom_peek.RoutingUids(*_slow(raw, syntax)))  # type: ignore[return-value]
    except Undecodable as exc:
        return f"undecodable: {exc}"


def _slow(raw: bytes, syntax: str) -> list[str]:
    little = syntax != "1.2.840.10008.1.2.2"
    implicit = syntax == ImplicitVRLittleEndian
    if syntax == "1.2.840.10008.1.2.1.99":
        import zlib

        raw = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw)
    uids = dicom_peek._pydicom_routing_uids(raw, implicit, little)
    if not all(uids):
        raise Undecodable("dataset lacks Study, Series or SOP Instance UID")
    return uids


def _samples() -> list[tuple[bytes, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = sorted(map(str, pydicom_bundled_files(charsets=True)))
        return [s for s in map(_raw_dataset, paths) if s is not None]


SAMPLES = _samples()


def test_there_are_enough_samples_to_mean_something() -> None:
    assert len(SAMPLES) > 100
    assert {ImplicitVRLittleEndian, ExplicitVRLittleEndian} <= {syntax for _, syntax in SAMPLES}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_fast_path_agrees_with_pydicom(index: int) -> None:
    # GIVEN one of pydicom's test files, as the dataset bytes of a C-STORE
    raw, syntax = SAMPLES[index]
    # WHEN the gateway peeks at it
    try:
        answer: tuple[str, str, str] | str = tuple(routing_uids(raw, syntax))  # type: ignore[assignment]
    except Undecodable as exc:
        answer = f"undecodable: {exc}"
    # THEN it finds what pydicom's reader finds (or refuses the same way)
    assert answer == _pydicom_answer(raw, syntax)


@pytest.mark.filterwarnings("ignore")
def test_the_fast_path_answers_nearly_all_little_endian_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    deferred: list[int] = []
    slow = dicom_peek._pydicom_routing_uids

    def counting(data: bytes, implicit: bool, little: bool) -> list[str]:
        deferred.append(1)
        return slow(data, implicit, little)

    monkeypatch.setattr(dicom_peek, "_pydicom_routing_uids", counting)
    little = [(raw, syntax) for raw, syntax in SAMPLES if syntax != "1.2.840.10008.1.2.2"]
    answered = 0
    for raw, syntax in little:
        with contextlib.suppress(Undecodable):
            routing_uids(raw, syntax)
            answered += 1
    assert answered > 100
    assert len(deferred) <= 0.02 * len(little)


def _encode(ds: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _dataset_with_nested_undefined_sequences() -> Dataset:
    inner = Dataset()
    inner.CodeValue = "1.2.3"  # looks like a UID, must not be taken for one
    inner.ReferencedSOPInstanceUID = "9.9.9"
    middle = Dataset()
    middle.ConceptNameCodeSequence = Sequence([inner])
    middle.SeriesInstanceUID = "8.8.8"  # nested: not the instance's own series
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1"
    ds.ReferencedSeriesSequence = Sequence([middle, Dataset()])
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.3"
    ds.Rows = 2
    for sequence in (ds.ReferencedSeriesSequence, middle.ConceptNameCodeSequence):
        sequence.is_undefined_length = True
        for item in sequence:
            item.is_undefined_length_sequence_item = True
    return ds


@pytest.mark.parametrize("implicit", [True, False])
def test_nested_undefined_length_sequences_are_skipped(
    implicit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN top-level UIDs after undefined-length sequences holding look-alike UIDs
    raw = _encode(_dataset_with_nested_undefined_sequences(), implicit)
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    # WHEN the byte walker alone reads it (pydicom is not allowed to help)
    monkeypatch.setattr(dicom_peek, "_pydicom_routing_uids", _forbidden)
    # THEN it returns the instance's own UIDs
    assert routing_uids(raw, syntax) == (
        "1.2.826.0.1.3680043.2.2",
        "1.2.826.0.1.3680043.2.3",
        "1.2.826.0.1.3680043.2.1",
    )


def _forbidden(*_args: object) -> list[str]:
    raise AssertionError("the fast path should have answered")


def test_truncated_dataset_goes_to_pydicom_and_is_refused() -> None:
    raw = _encode(_dataset_with_nested_undefined_sequences(), False)
    with pytest.raises(Undecodable):
        routing_uids(raw[:40], ExplicitVRLittleEndian)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_garbage_is_refused_with_a_reason_free_of_content() -> None:
    with pytest.raises(Undecodable) as caught:
        routing_uids(b"\x08\x00\x18\x00UI\xff\x7fPATIENT-NAME", ExplicitVRLittleEndian)
    assert "PATIENT" not in str(caught.value)


def test_memoryview_input_is_accepted() -> None:
    raw = _encode(_dataset_with_nested_undefined_sequences(), True)
    assert routing_uids(memoryview(raw), ImplicitVRLittleEndian).sop_uid == "1.2.826.0.1.3680043.2.1"
