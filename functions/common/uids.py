"""The one UID rule of the system: what the gateway, STOW and the API accept as a UID.

PS3.5 9.1 says a UID is dot-separated numeric components, at most 64 characters,
with no leading zero in a component other than ``0`` itself. Real modalities send
leading zeros (``1.2.826.0.1.3680043.8.498.0100.1``) and PACS store them, so the
rule here accepts them: refusing would make the PACS retry an instance forever,
and every route accepts what this rule accepts, so nothing acknowledged is
unreachable. What the rule refuses (letters, separators, control characters,
empty components such as ``.`` or ``..``, more than 64 characters) could not be
served or would be unsafe in a spool or S3 path: it is refused at the door
(a C-STORE failure status, a STOW FailedSOPSequence reason, a 400).

Trailing padding (NUL or space, PS3.5 6.2) is not part of the value: callers pass
the value after :func:`strip_padding`.
"""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
# Dotted runs of digits: no empty component, so never "", ".", "..", "1..2" or "1.".
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def strip_padding(value: str) -> str:
    """The UID without the trailing NUL/space padding of PS3.5 6.2 (leading spaces too)."""
    return value.strip("\x00 ")


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable UID, or ``None`` if it is.

    The reason names the rule broken, never the value (no PHI in logs or errors).
    """
    if not value:
        return "empty UID"
    if len(value) > MAX_UID_LENGTH:
        return f"UID longer than {MAX_UID_LENGTH} characters"
    if not _UID.fullmatch(value):
        return "UID is not dot-separated digits (PS3.5 9.1)"
    return None


def is_valid_uid(value: str) -> bool:
    """``True`` if ``value`` passes :func:`uid_problem` (safe as a path component, routable)."""
    return uid_problem(value) is None
