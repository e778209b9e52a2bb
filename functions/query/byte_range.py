"""One ``Range: bytes=...`` request header (RFC 9110 14.1.2, 14.2) resolved against a value's length.

Only a single range is served: ``bytes=a-b``, ``bytes=a-`` and the suffix ``bytes=-n``.
A header that is absent, malformed, of another unit, or names several ranges is
ignored, and the whole value is answered (RFC 9110 14.2 lets a server ignore Range).
A satisfiable range is answered 206 with ``Content-Range: bytes a-b/length``; an
unsatisfiable one (first byte at or past the end, or a suffix of 0 bytes) is
:class:`RangeNotSatisfiable`, answered 416 with ``Content-Range: bytes */length``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(Exception):
    """The range names no byte of the value (RFC 9110 15.5.17); ``length`` goes in Content-Range."""

    def __init__(self, length: int) -> None:
        super().__init__(f"the requested range is not satisfiable: the value has {length} bytes")
        self.length = length


@dataclass(frozen=True)
class RangeRequest:
    """One parsed range: ``first``..``last`` (``last`` None: to the end), or the last ``suffix`` bytes."""

    first: int | None
    last: int | None
    suffix: int | None = None

    def resolve(self, length: int) -> tuple[int, int]:
        """Inclusive (first, last) byte offsets within a value of ``length`` bytes.

        ``last`` past the end is clamped to the end, a suffix longer than the value is the
        whole value. Raises RangeNotSatisfiable when no byte is selected.
        """
        if self.suffix is not None:
            if self.suffix == 0 or length == 0:
                raise RangeNotSatisfiable(length)
            return max(0, length - self.suffix), length - 1
        first = self.first or 0
        if first >= length:
            raise RangeNotSatisfiable(length)
        last = length - 1 if self.last is None else min(self.last, length - 1)
        return first, last


def parse(header: str | None) -> RangeRequest | None:
    """The single byte range a ``Range`` header asks for, or None to answer the whole value."""
    if not header:
        return None
    match = _SPEC.match(header)
    if match is None:  # another unit, several ranges, or not a range at all
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:
        return RangeRequest(None, None, suffix=int(last))
    if last and int(last) < int(first):
        return None  # invalid range-spec: ignored (RFC 9110 14.1.1)
    return RangeRequest(int(first), int(last) if last else None)


def content_range(first: int, last: int, length: int) -> str:
    """``bytes first-last/length`` (RFC 9110 14.4)."""
    return f"bytes {first}-{last}/{length}"
