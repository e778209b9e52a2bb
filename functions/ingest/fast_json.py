"""DICOM JSON (PS3.18 F.2) of a header, several times faster than ``Dataset.to_json_dict``.

pydicom builds a ``DataElement`` (value conversion, validation) for every
element before encoding it: about 4 ms for a 250-element CT header, the largest
CPU cost of ingest. Here the common cases are encoded straight from the raw
bytes: text, numbers and binary values in a data set whose character set is a
single, stateless one (ASCII, Latin-1..9, Cyrillic, Greek, Arabic, Hebrew,
Thai, UTF-8). Everything else (person names, sequences, AT, UN, ambiguous VRs,
implicit-VR private elements, ISO 2022 and GB18030 character sets, any value
that does not parse cleanly) goes through pydicom element by element, so the
output is pydicom's own. ``tests/unit/test_ingest_corpus.py`` checks that both
agree on every file pydicom ships.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

DicomJson = dict[str, dict[str, Any]]

_SIMPLE_CODECS = re.compile(r"^(iso8859(_\d+)?|latin_1|utf_8|tis_620|ascii)$")
_INT = re.compile(r"^[+-]?\d+$")
_DS = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_NUMERIC_TEXT: dict[str, tuple[Callable[[str], float], re.Pattern[str]]] = {
    "DS": (float, _DS),
    "IS": (int, _INT),
}
_ONE_LITTLE = {vr: struct.Struct("<" + fmt) for vr, fmt in _NUMBERS.items()}
_ONE_BIG = {vr: struct.Struct(">" + fmt) for vr, fmt in _NUMBERS.items()}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_ASCII_MULTI = frozenset({"AS", "CS", "DA", "DT", "TM"})
_TEXT_MULTI = frozenset({"SH", "LO", "UC"})
_TEXT_SINGLE = frozenset({"ST", "LT", "UT"})


class _Fallback(Exception):
    """This element is left to pydicom."""


class _Tagged:
    """What the bulk data handler gets for an element encoded here: its tag and VR."""

    def __init__(self, tag: int, vr: str) -> None:
        self.tag = tag
        self.VR = vr


def to_json_dict(
    ds: Dataset, bulk_data_threshold: int, bulk_data_element_handler: Callable[[Any], str]
) -> DicomJson:
    """What ``ds.to_json_dict(threshold, handler)`` gives, faster.

    An element pydicom cannot encode is left out (instead of losing the whole
    header). Unlike ``suppress_invalid_tags``, values that merely break a VR's
    rules (a UID component with a leading zero, an over-long name) are kept:
    they are what the modality sent.
    """
    encodings = list(getattr(ds, "_character_set", None) or ["iso8859"])
    codec = encodings[0] if len(encodings) == 1 and _SIMPLE_CODECS.match(encodings[0]) else None
    little = bool(getattr(ds, "is_little_endian", True) if ds.is_little_endian is not None else True)
    out: DicomJson = {}
    for tag, elem in ds._dict.items():
        key = f"{tag:08X}"
        try:
            if codec is None or not isinstance(elem, RawDataElement):
                raise _Fallback
            out[key] = _raw_to_json(elem, codec, little, bulk_data_threshold, bulk_data_element_handler)
        except _Fallback:
            try:
                out[key] = ds[tag].to_json_dict(bulk_data_element_handler, bulk_data_threshold)
            except Exception:  # noqa: S112 - as pydicom's suppress_invalid_tags: leave the element out
                continue
    return out


def _raw_to_json(  # noqa: PLR0911, PLR0912 - one branch per VR family reads best here
    elem: RawDataElement, codec: str, little: bool, threshold: int, handler: Callable[[Any], str]
) -> dict[str, Any]:
    vr = elem.VR
    if vr is None:
        if elem.tag.is_private:
            raise _Fallback
        try:
            vr = dictionary_VR(elem.tag)
        except KeyError:
            raise _Fallback from None
    value = elem.value
    if value is None or elem.length == 0xFFFFFFFF or vr == "SQ":
        raise _Fallback
    if not value:
        return {"vr": vr}
    if vr in _BINARY:
        if len(value) > (threshold // 4) * 3:
            return {"vr": vr, "BulkDataURI": handler(_Tagged(int(elem.tag), vr))}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode()}
    fmt = _NUMBERS.get(vr)
    if fmt is not None:
        one = (_ONE_LITTLE if little else _ONE_BIG)[vr]
        if len(value) == one.size:  # the usual case: a single value, a precompiled struct
            return {"vr": vr, "Value": list(one.unpack(value))}
        count, rest = divmod(len(value), one.size)
        if rest:
            raise _Fallback
        # struct gives int for the integer VRs and float for FL/FD, as pydicom's JSON does.
        return {"vr": vr, "Value": list(struct.unpack(f"{'<' if little else '>'}{count}{fmt}", value))}
    try:
        numeric = _NUMERIC_TEXT.get(vr)  # DS, IS: the most frequent text VRs of image headers
        if numeric is not None:
            number, pattern = numeric
            if b"\\" not in value:
                text = value.decode("latin_1").strip(" \x00")
                if not pattern.match(text):
                    raise _Fallback
                return {"vr": vr, "Value": [number(text)]}
            texts = [s.strip(" \x00") for s in value.decode("latin_1").split("\\")]
            if not all(pattern.match(t) for t in texts):
                raise _Fallback
            return {"vr": vr, "Value": [number(t) for t in texts]}
        if vr == "AE":
            items = [s.strip() for s in value.decode("latin_1").split("\\")]
        elif vr in _ASCII_MULTI:
            items = value.decode("latin_1").rstrip(" \x00").split("\\")
        elif vr == "UI":
            items = value.decode("latin_1").rstrip("\x00 ").split("\\")
        elif vr in _TEXT_MULTI:
            items = [s.rstrip("\x00 ") for s in value.decode(codec).split("\\")]
        elif vr in _TEXT_SINGLE:
            items = [value.decode(codec).rstrip("\x00 ")]
        else:
            raise _Fallback
    except UnicodeDecodeError:
        raise _Fallback from None
    if len(items) == 1:
        return {"vr": vr, "Value": items} if items[0] else {"vr": vr}
    if any(not i for i in items):
        raise _Fallback  # empty values inside a multi-value: pydicom's rules
    return {"vr": vr, "Value": items}
