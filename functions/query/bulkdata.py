"""Bulk data of WADO-RS metadata (PS3.18 8.7.2, 10.4.1.1.5): URIs in the DICOM JSON and their values.

Ingest leaves elements longer than 1 KB out of the stored DICOM JSON with a
relative ``BulkDataURI`` (``bulkdata/<tag>``), and stops before Pixel Data. The
metadata answer turns those into absolute URIs naming the element by its path in
the data set: ``<instance URL>/bulkdata/<tag>[.<item index>.<tag>...]`` (dots, so
that the path is one URL segment), and adds Pixel Data's URI to instances with
pixels. Absolute URIs are used as they are by OHIF and dicomweb-client.
"""

from __future__ import annotations

import re
from typing import Any

from common.dicom_json import DicomJson

PIXEL_DATA = "7FE00010"
PATH_PATTERN = re.compile(r"^[0-9A-Fa-f]{8}(\.\d{1,6}\.[0-9A-Fa-f]{8}){0,8}$")


class BadPath(ValueError):
    """A bulk data path that is not ``tag(.index.tag)*``."""


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    """WADO-RS URL of an instance under ``base`` (PS3.18 10.4.1)."""
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


def with_bulk_data_uris(header: DicomJson, url: str, transfer_syntax: str) -> DicomJson:
    """A copy of ``header`` whose BulkDataURIs are absolute, with Pixel Data's added when it has pixels.

    ``url`` is the instance's URL (``.../instances/<sop>``).
    """
    result = _rewrite(header, url + "/bulkdata/", "")
    if "00280010" in header and PIXEL_DATA not in result:
        native = transfer_syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "")
        bits = int(((header.get("00280100") or {}).get("Value") or [16])[0] or 16)
        vr = "OW" if native and bits > 8 else "OB"
        result[PIXEL_DATA] = {"vr": vr, "BulkDataURI": f"{url}/bulkdata/{PIXEL_DATA}"}
    return result


def _rewrite(data: DicomJson, prefix: str, path: str) -> DicomJson:
    out: DicomJson = {}
    for tag, element in data.items():
        here = f"{path}{tag}"
        if not isinstance(element, dict):
            out[tag] = element
        elif "BulkDataURI" in element:
            out[tag] = {**element, "BulkDataURI": prefix + here}
        elif element.get("vr") == "SQ" and element.get("Value"):
            items = [
                _rewrite(item, prefix, f"{here}.{index}.") if isinstance(item, dict) else item
                for index, item in enumerate(element["Value"])
            ]
            out[tag] = {**element, "Value": items}
        else:
            out[tag] = element
    return out


def parse_path(text: str) -> list[tuple[int, int | None]]:
    """``00540016.0.00181074`` as [(0x00540016, 0), (0x00181074, None)]; BadPath otherwise."""
    if not PATH_PATTERN.match(text):
        raise BadPath("bulk data path: expected tag(.item.tag)*, tags as 8 hex digits")
    pieces = text.split(".")
    steps: list[tuple[int, int | None]] = []
    for i in range(0, len(pieces), 2):
        index = int(pieces[i + 1]) if i + 1 < len(pieces) else None
        steps.append((int(pieces[i], 16), index))
    return steps


def element_value(ds: Any, steps: list[tuple[int, int | None]]) -> bytes | None:
    """The raw value bytes of the element at ``steps`` in a pydicom data set, or None."""
    current = ds
    for tag, index in steps:
        element = current.get(tag) if hasattr(current, "get") else None
        if element is None:
            return None
        if index is not None:
            items = element.value if isinstance(element.value, list | tuple) or element.VR == "SQ" else []
            if index >= len(items):
                return None
            current = items[index]
            continue
        value = element.value
        if isinstance(value, str):
            value = value.encode()
        return bytes(value) if isinstance(value, bytes | bytearray) else None
    return None
