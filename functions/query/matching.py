"""QIDO-RS attribute matching (PS3.4 C.2.2.2 and PS3.18 8.3.4), as pure functions.

Supported: single value, list of UIDs, wildcards ``*`` and ``?``, date and time
ranges, and fuzzy person-name matching (every query word is the prefix of a word
of the name, case and accents folded).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from common.dicom_dates import date_problem, normalise_date, normalise_time, time_problem
from common.names import fold, name_words
from common.uids import uid_problem

from query.errors import BadRequest


def check_uid(value: str, what: str = "UID") -> str:
    """``value`` if it passes the one UID rule (``common.uids``: what ingest and STOW accept), else 400."""
    problem = uid_problem(value)
    if problem is not None:
        raise BadRequest(f"malformed {what}: {problem}")
    return value


def uid_list(value: str, what: str) -> list[str]:
    """A UID list matching value (``a,b`` or ``a\\b``)."""
    return [check_uid(v.strip(), what) for v in re.split(r"[,\\]", value) if v.strip()]


@dataclass(frozen=True)
class Range:
    """An inclusive range of DA or TM values (PS3.4 C.2.2.2.5); an open end holds the extreme value."""

    low: str
    high: str

    def contains(self, value: str) -> bool:
        """Whether a non-empty ``value`` lies within the range (string order, as DA and TM sort)."""
        return bool(value) and self.low <= value <= self.high


def _range_ends(value: str, keyword: str) -> tuple[str, str]:
    """The two ends of a single value or range ``A-B``, ``A-``, ``-B`` (PS3.4 C.2.2.2.5.1)."""
    low, sep, high = value.strip().partition("-")
    if not sep:
        high = low
    low, high = low.strip(), high.strip()
    if not low and not high:
        raise BadRequest(f"{keyword}: empty range")
    return low, high


def date_range(value: str, keyword: str) -> Range:
    """The DA range a query value names: ``YYYYMMDD``, ``A-B``, ``A-`` or ``-B`` (PS3.4 C.2.2.2.5.1).

    Each end is a calendar date, ``YYYYMMDD`` or ACR-NEMA ``YYYY.MM.DD`` (``common.dicom_dates``,
    the normalisation ingest applies to stored values). Raises BadRequest naming ``keyword``, not
    the value, for anything else (``2024-01-01``, month 13, February 30) and for a range that
    ends before it starts: such a query would match nothing without saying why.
    """
    low, high = _range_ends(value, keyword)
    for end in (low, high):
        problem = date_problem(end) if end else None
        if problem is not None:
            raise BadRequest(f"{keyword}: {problem} (a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD)")
    low, high = normalise_date(low), normalise_date(high)
    if low and high and low > high:
        raise BadRequest(f"{keyword}: the range ends before it starts")
    return Range(low or "00000000", high or "99999999")


def time_range(value: str, keyword: str) -> Range:
    """The TM range a query value names: ``HHMMSS``, ``A-B``, ``A-`` or ``-B`` (PS3.4 C.2.2.2.5.1).

    Each end is ``HH[MM[SS[.F{1,6}]]]`` with real hours, minutes and seconds (colons of ACR-NEMA
    allowed); bounds are widened to full precision. Raises BadRequest naming ``keyword``.
    """
    low, high = _range_ends(value, keyword)
    for end in (low, high):
        problem = time_problem(end) if end else None
        if problem is not None:
            raise BadRequest(f"{keyword}: {problem} (a time HHMMSS or a range HHMMSS-HHMMSS)")
    low, high = normalise_time(low), normalise_time(high)
    return Range(full_time(low or "00"), full_time(high or "23", upper=True))


def full_time(value: str, upper: bool = False) -> str:
    """``HH[MM[SS[.f]]]`` as ``HHMMSS.ffffff``; missing digits are 0, or their maximum when upper."""
    whole, _, fraction = value.replace(":", "").partition(".")
    filler = "595999" if upper else "000000"
    whole = (whole + filler[len(whole) - 2 :])[:6] if len(whole) >= 2 else "000000"
    fraction = (fraction + ("9" if upper else "0") * 6)[:6]
    return f"{whole}.{fraction}"


def has_wildcard(pattern: str) -> bool:
    """Whether a key uses wild card matching, ``*`` or ``?`` (PS3.4 C.2.2.2.4)."""
    return "*" in pattern or "?" in pattern


def match_text(value: str, pattern: str) -> bool:
    """Single value or wildcard matching; case-sensitive as PS3.4 says for most VRs."""
    if has_wildcard(pattern):
        return fnmatchcase(value, pattern)
    return value == pattern


def match_folded(value: str, pattern: str) -> bool:
    """Single value or wildcard matching, case- and accent-insensitive.

    For free-text descriptions (StudyDescription, SeriesDescription) that viewers' search
    boxes send as ``*word*`` (OHIF): PS3.4 C.2.2.2.4 leaves this to the SCP for LO/SH.
    """
    return match_text(fold(value), fold(pattern))


def match_name(name: str, pattern: str, fuzzy: bool) -> bool:
    """Person-name matching, case- and accent-insensitive.

    ``fuzzy``: every word of the pattern starts a word of the name, in any order.
    Otherwise the whole name (any component group) matches the pattern, where a
    trailing ``*`` also matches the remaining components (``DOE*`` finds ``Doe^John``).
    """
    if fuzzy:
        words = name_words(name)
        # Viewers wrap what is typed in wildcards (OHIF sends *doe*): a word still starts it.
        wanted = [w.strip("*") for w in name_words(pattern)]
        return all(any(word.startswith(w) for word in words) for w in wanted if w)
    folded = fold(pattern)
    groups = [g for g in fold(name).split("=") if g] or [""]
    if not has_wildcard(folded):
        return any(g.rstrip("^") == folded.rstrip("^") for g in groups)
    return any(fnmatchcase(g, folded) for g in groups)


def name_index_prefix(pattern: str, fuzzy: bool) -> str | None:
    """The longest word prefix an index lookup can use for this pattern, or None."""
    folded = fold(pattern)
    if folded.startswith(("*", "?")):
        return None
    head = re.split(r"[*?]", folded, maxsplit=1)[0]
    words = name_words(head) if fuzzy else name_words(head.split("^", 1)[0])
    return words[0] if words else None


def flag(params: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter, false when absent; raises BadRequest unless true or false."""
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false")
    return value == "true"
