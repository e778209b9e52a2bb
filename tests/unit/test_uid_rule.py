"""The one UID rule (common.uids): what it accepts is safe as a path and routable."""

from __future__ import annotations

import pytest
from common.uids import MAX_UID_LENGTH, is_valid_uid, strip_padding, uid_problem


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008.1.2.1", "0", "1.2.826.0.1.3680043.8.498.0100.1", "1" * MAX_UID_LENGTH],
)
def test_accepts_dotted_digits_leading_zeros_included(uid: str) -> None:
    assert uid_problem(uid) is None
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    ("uid", "reason"),
    [
        ("", "empty"),
        (".", "digits"),
        ("..", "digits"),
        ("1..2", "digits"),
        ("1.2.", "digits"),
        (".1.2", "digits"),
        ("1.2/3", "digits"),
        ("1.2\\3", "digits"),
        ("1.2\n", "digits"),
        ("1.2.abc", "digits"),
        ("1" * (MAX_UID_LENGTH + 1), "longer"),
    ],
)
def test_refuses_what_cannot_be_served_or_is_unsafe_in_a_path(uid: str, reason: str) -> None:
    problem = uid_problem(uid)
    assert problem is not None and reason in problem
    assert not is_valid_uid(uid)


def test_reason_never_echoes_the_value() -> None:
    problem = uid_problem("1.2.DOE^JOHN")
    assert problem is not None and "DOE" not in problem


def test_padding_is_not_part_of_the_value() -> None:
    assert strip_padding("1.2.3\x00") == "1.2.3"
    assert strip_padding(" 1.2.3 ") == "1.2.3"
