"""common.decode_limits on hostile files: every limit refuses before the memory is spent (bytes, not time)."""

from __future__ import annotations

import io
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import pydicom
import pytest
from common import decode_limits
from common.decode_limits import LimitExceeded, check_part10, check_pixel_budget, inflate, read_part10

from tests import decode_bombs
from tests.helpers.dicom_factory import pydicom_bundled_files

MIB = 1024 * 1024


def peak_bytes(call: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """Peak Python allocation (tracemalloc) while ``call`` runs, and what it raised."""
    tracemalloc.start()
    raised: BaseException | None = None
    try:
        call()
    except Exception as exc:
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_a_deflate_bomb_is_refused_having_inflated_a_megabyte_at_a_time() -> None:
    # GIVEN a 0.1 MB deflated data set that inflates to 96 MB (three times the limit)
    bomb = decode_bombs.deflate_bomb(96 * MIB)
    assert len(bomb) < MIB // 8
    # WHEN it is checked THEN it is refused, and the check never held more than a few MB
    peak, raised = peak_bytes(lambda: check_part10(bomb, stop_before_pixels=True))
    assert isinstance(raised, LimitExceeded)
    assert "inflates beyond" in str(raised)
    assert peak < 4 * MIB
    # (pydicom alone would have inflated all of it: the limit is what stops it)
    assert decode_limits.MAX_INFLATED_BYTES < 96 * MIB


def test_a_deflated_file_within_the_limit_is_inflated_exactly() -> None:
    small = decode_bombs.deflate_bomb(MIB)
    ds = read_part10(small, stop_before_pixels=True)
    assert ds.Rows == 1
    assert ds.SOPClassUID == decode_bombs.CT_IMAGE_STORAGE
    data = b"x" * 3_000_000
    packer = __import__("zlib").compressobj(6, 8, -15)
    packed = packer.compress(data) + packer.flush()
    assert inflate(packed, len(data)) == data
    with pytest.raises(LimitExceeded):
        inflate(packed, len(data) - 1)
    with pytest.raises(ValueError, match="corrupt"):
        inflate(b"\xff" * 64)


@pytest.mark.parametrize(
    ("bomb", "message"),
    [
        (lambda: decode_bombs.element_bomb(decode_limits.MAX_ELEMENTS + 10), "data elements"),
        (lambda: decode_bombs.item_bomb(decode_limits.MAX_ITEMS + 10), "sequence items"),
        (lambda: decode_bombs.depth_bomb(decode_limits.MAX_DEPTH + 1), "nested deeper"),
    ],
    ids=["elements", "items", "depth"],
)
def test_counts_are_refused_before_pydicom_builds_an_object_per_element(
    bomb: Callable[[], bytes], message: str
) -> None:
    data = bomb()
    # The walk allocates nothing per element: far less than the bytes on the wire.
    peak, raised = peak_bytes(lambda: read_part10(data, stop_before_pixels=True))
    assert isinstance(raised, LimitExceeded)
    assert message in str(raised)
    assert peak < len(data) // 2 + MIB


def test_counts_just_under_the_limits_are_read() -> None:
    ds = read_part10(decode_bombs.item_bomb(1000), stop_before_pixels=True)
    assert len(ds[0x0040A730].value) == 1000
    assert len(read_part10(decode_bombs.element_bomb(5000), stop_before_pixels=True)) > 5000
    ds = read_part10(decode_bombs.depth_bomb(decode_limits.MAX_DEPTH - 1), stop_before_pixels=True)
    assert "ContentSequence" in ds


def test_a_walk_that_ends_early_counts_the_rest_as_elements() -> None:
    # GIVEN a stray item delimiter at the top level, followed by many tiny elements
    bomb = decode_bombs.element_bomb(decode_limits.MAX_ELEMENTS + 10)
    marker = len(bomb) - (decode_limits.MAX_ELEMENTS + 10) * 8
    hostile = bomb[:marker] + b"\xfe\xff\x0d\xe0\0\0\0\0" + bomb[marker:]
    # THEN the unread rest still counts against the element limit
    with pytest.raises(LimitExceeded, match="data elements"):
        check_part10(hostile, stop_before_pixels=True)


def test_the_declared_frame_size_is_read_from_the_header_and_checked() -> None:
    numbers = check_part10(decode_bombs.rle_bomb(8000, 8000), stop_before_pixels=True)
    assert numbers == {"SamplesPerPixel": 1, "Rows": 8000, "Columns": 8000, "BitsAllocated": 16}
    with pytest.raises(LimitExceeded, match="128000000 bytes > limit"):
        check_pixel_budget(numbers)
    assert check_pixel_budget(numbers, 1, 128_000_000) == 128_000_000
    with pytest.raises(LimitExceeded):
        check_pixel_budget({"Rows": 512, "Columns": 512, "BitsAllocated": 16}, frames=500)
    with pytest.raises(LimitExceeded, match="Rows is not a number"):
        check_pixel_budget({"Rows": "many"})


def test_every_pydicom_test_file_passes_the_limits() -> None:
    # The limits refuse hostile files, not real ones: pydicom's own corpus (explicit and implicit
    # VR, big endian, deflated, encapsulated, nested and private sequences) reads as before.
    read = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in pydicom_bundled_files("*.dcm"):
            with open(name, "rb") as file:
                data = file.read()
            if len(data) > 2 * MIB:
                continue
            try:
                expected = pydicom.dcmread(io.BytesIO(data), force=True)
            except Exception:  # noqa: S112 - files pydicom itself cannot read are not the point here
                continue
            ds = read_part10(data, stop_before_pixels=False)
            assert len(ds) == len(expected), name
            read += 1
    assert read > 50
