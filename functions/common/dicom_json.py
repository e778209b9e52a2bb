"""Small helpers over the DICOM JSON model (PS3.18 F.2) that both functions use."""

from __future__ import annotations

from typing import Any

from common.attributes import BY_KEYWORD, Attribute
from common.names import pn_to_text

DicomJson = dict[str, dict[str, Any]]


def first_text(level: DicomJson, keyword: str) -> str:
    """First value of an attribute given by keyword, as text; '' when absent or empty."""
    element = level.get(BY_KEYWORD[keyword].tag)
    values = (element or {}).get("Value") or []
    if not values or values[0] is None:
        return ""
    value = values[0]
    if isinstance(value, dict):
        return pn_to_text(value)
    return str(value).strip()


def element(attribute: Attribute, *values: Any) -> dict[str, Any]:
    """A DICOM JSON element; no values gives an element without ``Value`` (present but empty)."""
    if not values:
        return {"vr": attribute.vr}
    return {"vr": attribute.vr, "Value": list(values)}
