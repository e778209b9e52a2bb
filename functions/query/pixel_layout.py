"""A pixel layout: where each frame of an instance is inside its zip member (PS3.5 A.4).

Shared by the frame reader (``query.frames``) and the transcoder (``query.transcode``);
it imports neither, so the two never import each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

LAYOUT_VERSION = 1


class FrameError(Exception):
    """The instance's frames cannot be located (message safe for clients: no PHI)."""


class NoSuchFrame(FrameError):
    """A frame number outside 1..NumberOfFrames."""


@dataclass(frozen=True)
class PixelLayout:
    """Where the frames are, in offsets within the member's (uncompressed) bytes.

    ``value_offset``: first byte of the Pixel Data value; ``frame_length``: bytes of one
    native frame; ``spans``: per encapsulated frame, ``[start, end)`` of its items.
    ``header``: the attributes a decoder needs (Rows, Columns, BitsAllocated, ...).
    """

    transfer_syntax: str
    number_of_frames: int
    value_offset: int
    value_length: int
    encapsulated: bool
    frame_length: int = 0
    spans: list[list[int]] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def frame_span(self, number: int) -> tuple[int, int]:
        """``[start, end)`` of frame ``number`` (1-based) within the member; NoSuchFrame outside."""
        if not 1 <= number <= self.number_of_frames:
            raise NoSuchFrame(f"frame {number} outside 1..{self.number_of_frames}")
        if self.encapsulated:
            start, end = self.spans[number - 1]
            return start, end
        start = self.value_offset + (number - 1) * self.frame_length
        return start, start + self.frame_length

    def to_json(self) -> str:
        """The layout as JSON, with its format version."""
        return json.dumps({"version": LAYOUT_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: bytes | str) -> PixelLayout | None:
        """A layout read back from ``to_json``, or None when written by another version."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("version", None) != LAYOUT_VERSION:
            return None
        return cls(**data)
