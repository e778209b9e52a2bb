"""Limits checked before any pixel data is decoded or allocated.

Every decode path (rendered, previews, frames, thumbnails, transcoding) calls
:func:`check_pixel_budget` with the header before it touches pixel data, so a
hostile header declaring 8000 x 8000 x 1000 frames is refused from its numbers
alone. The limits are in bytes of *decoded* pixel data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Decoded pixel bytes one request may allocate: a 4096 x 4096 x 3 x 16-bit frame is 96 MiB.
MAX_DECODED_FRAME_BYTES = 96 * 1024 * 1024


class LimitExceeded(ValueError):
    """The object declares more than a limit allows (message safe to return, no PHI)."""


def _int(header: Mapping[str, Any] | Any, keyword: str, default: int) -> int:
    value = header.get(keyword, default) if isinstance(header, Mapping) else getattr(header, keyword, default)
    try:
        number = int(value if value not in (None, "") else default)
    except (TypeError, ValueError) as exc:
        raise LimitExceeded(f"{keyword} is not a number") from exc
    if number < 0:
        raise LimitExceeded(f"{keyword} is negative")
    return number


def frame_bytes(header: Mapping[str, Any] | Any) -> int:
    """Decoded bytes of one frame: Rows x Columns x SamplesPerPixel x ceil(BitsAllocated / 8).

    ``header`` is a pydicom ``Dataset`` or a mapping of keyword to value.
    Raises :class:`LimitExceeded` when a value is not a non-negative number.
    """
    rows = _int(header, "Rows", 0)
    columns = _int(header, "Columns", 0)
    samples = _int(header, "SamplesPerPixel", 1)
    bits = _int(header, "BitsAllocated", 8)
    return rows * columns * samples * max(1, (bits + 7) // 8)


def check_pixel_budget(
    header: Mapping[str, Any] | Any, frames: int = 1, limit: int = MAX_DECODED_FRAME_BYTES
) -> int:
    """Refuse to decode ``frames`` frames of ``header`` if they exceed ``limit`` bytes.

    Returns the decoded size in bytes. Raises :class:`LimitExceeded` (map to 413 or a
    STOW failure reason) before anything is allocated.
    """
    size = frame_bytes(header) * max(1, frames)
    if size > limit:
        raise LimitExceeded(f"decoded pixel data of {size} bytes exceeds the limit of {limit} bytes")
    return size
