"""The one Accept header parser of the query function, and the media types of PS3.18 8.7.

``parse`` turns an Accept header into media ranges ordered by preference (q-value,
then order given; q=0 ranges are dropped, RFC 9110 12.5.1). A multipart range keeps
its ``type`` parameter (the media type of each part) and ``transfer-syntax``
parameter (PS3.18 8.7.3.5.2: ``*`` means "as stored").
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
OCTET_STREAM = "application/octet-stream"
ANY_TRANSFER_SYNTAX = "*"

# Native (uncompressed) pixel data: frames are raw bytes, served as application/octet-stream.
NATIVE_TRANSFER_SYNTAXES = {
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
}

# PS3.18 Table 8.7.3-5: the media type of a compressed frame, by transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    RLE_LOSSLESS: "image/dicom-rle",
}
# Spellings clients send for the same media types (older editions, cornerstone's table).
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``type/subtype`` and its parameters (names lower-cased)."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def is_multipart(self) -> bool:
        """Whether the range asks for a multipart/related answer (PS3.18 8.7.3)."""
        return self.media_type in ("multipart/related", "multipart/*")

    @property
    def part_type(self) -> str | None:
        """The ``type`` parameter of a multipart range (the media type of its parts), lower case."""
        value = self.params.get("type")
        return MEDIA_TYPE_ALIASES.get(value, value) if value else None

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter (a UID, or ``*``), or None (PS3.18 8.7.3.5.2)."""
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        """Whether this range admits ``media_type`` (wildcards ``*/*`` and ``type/*`` included)."""
        if self.media_type == "*/*":
            return True
        main, _, sub = self.media_type.partition("/")
        return (sub == "*" and media_type.startswith(main + "/")) or self.media_type == media_type


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def parse(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, most preferred first; ``*/*`` when there is no header.

    Malformed q-values count as 1 (be lenient in what we accept); q=0 means "not this".
    """
    ranges: list[tuple[float, int, MediaRange]] = []
    for index, entry in enumerate(_split(header or "*/*", ",")):
        pieces = _split(entry, ";")
        media_type = pieces[0].strip().lower()
        if not media_type:
            continue
        if "/" not in media_type:
            media_type = "*/*" if media_type == "*" else media_type + "/*"
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"').strip()
            if name == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 1.0
            elif name:
                params[name] = value.lower() if name == "type" else value
        if q > 0:
            ranges.append((q, index, MediaRange(MEDIA_TYPE_ALIASES.get(media_type, media_type), params, q)))
    ranges.sort(key=lambda r: (-r[0], r[1]))
    return [r[2] for r in ranges]


@dataclass(frozen=True)
class FrameAnswer:
    """How frames are answered: the parts' media type and transfer syntax, and whether to decode.

    ``decode``: the stored frames are decoded to native little-endian pixels first.
    ``multipart``: False only when the client accepts the single part media type alone.
    """

    media_type: str
    transfer_syntax: str
    decode: bool
    multipart: bool = True

    def part_content_type(self) -> str:
        """The Content-Type line of each part, as cornerstone's dicomImageLoader reads it."""
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def _octet_answer(stored: str, wanted: str | None, can_decode: bool) -> FrameAnswer | None:
    native_le = stored in (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
    if wanted == ANY_TRANSFER_SYNTAX:
        return FrameAnswer(OCTET_STREAM, stored, False)
    if wanted in (None, EXPLICIT_VR_LITTLE_ENDIAN):  # the default of octet-stream (PS3.18 8.7.3.5.2)
        if native_le:
            return FrameAnswer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, False)
        return FrameAnswer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, True) if can_decode else None
    if wanted == IMPLICIT_VR_LITTLE_ENDIAN and native_le:
        return FrameAnswer(OCTET_STREAM, IMPLICIT_VR_LITTLE_ENDIAN, False)
    if wanted == stored:
        return FrameAnswer(OCTET_STREAM, stored, False)
    return None


def negotiate_frames(header: str | None, stored: str, can_decode: bool) -> FrameAnswer | None:
    """The answer for retrieving frames (PS3.18 8.7.3.5) stored in transfer syntax ``stored``.

    ``can_decode``: whether a decoder for ``stored`` is installed. Returns None when
    nothing acceptable can be produced (406): frames are never re-encoded.
    """
    stored_media = FRAME_MEDIA_TYPES.get(stored)
    for media_range in parse(header):
        multipart = media_range.is_multipart or media_range.media_type == "*/*"
        part = media_range.part_type if media_range.is_multipart else media_range.media_type
        wanted = media_range.transfer_syntax
        answer: FrameAnswer | None = None
        if part in (None, "*/*", OCTET_STREAM, "application/*"):
            answer = _octet_answer(stored, wanted, can_decode)
        elif (
            stored_media
            and MediaRange(part).matches(stored_media)
            and wanted in (None, ANY_TRANSFER_SYNTAX, stored)
        ):
            answer = FrameAnswer(stored_media, stored, False)
        if answer is not None:
            return FrameAnswer(answer.media_type, answer.transfer_syntax, answer.decode, multipart)
    return None


@dataclass(frozen=True)
class InstanceAnswer:
    """How instances are answered: single part or multipart, and the transfer syntax asked for.

    ``transfer_syntax`` is ``*`` (as stored) or a UID that each instance must be in.
    """

    single: bool
    transfer_syntax: str


def negotiate_instances(header: str | None, single_allowed: bool) -> InstanceAnswer | None:
    """The answer for retrieving instances (PS3.18 8.7.3.5.1), None for 406.

    ``application/dicom`` without a transfer-syntax parameter means Explicit VR Little
    Endian (its default, PS3.18 Table 8.7.3-2); ``*`` means as stored.
    """
    for media_range in parse(header):
        wanted = media_range.transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN
        if media_range.media_type == "*/*":
            return InstanceAnswer(False, media_range.transfer_syntax or ANY_TRANSFER_SYNTAX)
        if media_range.is_multipart and media_range.part_type in (None, "application/dicom"):
            return InstanceAnswer(False, wanted)
        if media_range.media_type == "application/dicom" and single_allowed:
            return InstanceAnswer(True, wanted)
    return None
