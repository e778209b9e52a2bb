"""DA and TM values (PS3.5 6.2): normalising stored values, and checking query values.

Stored values are taken as they come (ingest normalises the legacy forms for matching and keeps
the header as received); a query value must be a real date or time, so that a typo is a 400 and
not a search that silently matches nothing.
"""

from __future__ import annotations

import datetime
import re

_DATE = re.compile(r"\d{8}")
# HH, HHMM, HHMMSS, HHMMSS.F to HHMMSS.FFFFFF (colons of ACR-NEMA removed first).
_TIME = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")


def normalise_date(value: str) -> str:
    """A DA value as ``YYYYMMDD``: ACR-NEMA ``YYYY.MM.DD`` and ISO ``YYYY-MM-DD`` too (PS3.5 6.2).

    Anything else is returned stripped, unchanged (stored values are not refused for their date).
    """
    text = value.strip()
    compact = text.replace(".", "").replace("-", "")
    if len(text) == 10 and text[4] == text[7] and text[4] in ".-" and compact.isdigit():
        return compact
    return text


def normalise_time(value: str) -> str:
    """A TM value without the ``HH:MM:SS`` colons of ACR-NEMA (``HHMMSS.ffffff``)."""
    return value.strip().replace(":", "")


def date_problem(value: str) -> str | None:
    """Why ``value`` is not a query date (``YYYYMMDD``, or ACR-NEMA ``YYYY.MM.DD``), or None.

    The reason never repeats the value. Used on each end of a range (PS3.4 C.2.2.2.5.1): an ISO
    ``YYYY-MM-DD`` cannot be one end, as its dashes are the range separator.
    """
    text = normalise_date(value)
    if not _DATE.fullmatch(text):
        return "not a date: expected YYYYMMDD"
    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as exc:  # month 13, February 30, year 0
        return f"not a calendar date ({exc})"
    return None


def time_problem(value: str) -> str | None:
    """Why ``value`` is not a query time (``HH[MM[SS[.F{1,6}]]]``, colons allowed), or None.

    Hours 00-23, minutes 00-59, seconds 00-60 (PS3.5 6.2 allows a leap second). The reason
    never repeats the value.
    """
    match = _TIME.fullmatch(normalise_time(value))
    if match is None:
        return "not a time: expected HHMMSS (HH, HHMM and a fraction .FFFFFF too)"
    hours, minutes, seconds, _fraction = match.groups()
    if int(hours) > 23:
        return "hours over 23"
    if minutes is not None and int(minutes) > 59:
        return "minutes over 59"
    if seconds is not None and int(seconds) > 60:
        return "seconds over 60"
    return None
