"""Attribute names as clients write them: ``0010,0010``, ``(0010,0010)``, ``00100010`` or ``PatientName``."""

from __future__ import annotations

import re

from common.attributes import BY_KEYWORD

from query.errors import BadRequest

TAG_PATTERN = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
KEYWORD_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
INDEXED_TAGS = {a.tag for a in BY_KEYWORD.values()}


def tag_of(name: str) -> str:
    """Eight upper-case hex digits for a tag or keyword; unknown keywords are a 400."""
    text = name.strip()
    match = TAG_PATTERN.match(text)
    if match:
        return (match.group(1) + match.group(2)).upper()
    known = BY_KEYWORD.get(text)
    if known is not None:
        return known.tag
    if KEYWORD_PATTERN.match(text):
        # The full data dictionary only for keywords the index does not keep (pydicom, lazily).
        from pydicom.datadict import tag_for_keyword

        tag = tag_for_keyword(text)
        if tag is not None:
            return f"{tag:08X}"
    raise BadRequest("unknown attribute: give a tag (0010,0010 or 00100010) or a DICOM keyword")


def keyword_of(tag: str) -> str:
    """The keyword of a tag (eight hex digits), '' when the data dictionary has none."""
    for attribute in BY_KEYWORD.values():
        if attribute.tag == tag:
            return attribute.keyword
    from pydicom.datadict import keyword_for_tag

    return str(keyword_for_tag(int(tag, 16)) or "")
