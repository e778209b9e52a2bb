"""Range request headers (RFC 9110 14.1.2) resolved against a value's length."""

from __future__ import annotations

import pytest
from query.byte_range import RangeNotSatisfiable, RangeRequest, content_range, parse


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=90-1000", 100, (90, 99)),  # last past the end: clamped
        ("bytes=-1000", 100, (0, 99)),  # suffix longer than the value: all of it
        ("Bytes = 5 - 5", 100, (5, 5)),
        ("bytes=99-99", 100, (99, 99)),
    ],
)
def test_a_single_range_selects_these_bytes(header: str, length: int, expected: tuple[int, int]) -> None:
    wanted = parse(header)
    assert wanted is not None
    assert wanted.resolve(length) == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=-", "bytes=a-b", "0-9", "bytes=1.5-2"],
)
def test_what_is_not_one_valid_byte_range_is_ignored(header: str | None) -> None:
    assert parse(header) is None


@pytest.mark.parametrize(
    ("header", "length"), [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100)]
)
def test_a_range_that_selects_nothing_is_not_satisfiable(header: str, length: int) -> None:
    wanted = parse(header)
    assert wanted is not None
    with pytest.raises(RangeNotSatisfiable) as refused:
        wanted.resolve(length)
    assert refused.value.length == length


def test_an_empty_value_satisfies_no_range() -> None:
    with pytest.raises(RangeNotSatisfiable):
        RangeRequest(0, None).resolve(0)


def test_content_range_names_the_bytes_and_the_length() -> None:
    assert content_range(0, 9, 100) == "bytes 0-9/100"
