"""Key design of the index table and of the bucket, in one place.

Table (one table, string keys ``pk``/``sk``). Everything about a study lives in
the study's partition, so a study, its series and its instances are one Query:

| item     | pk              | sk                                   |
| -------- | --------------- | ------------------------------------ |
| study    | ``STUDY#<uid>`` | ``#STUDY``                           |
| series   | ``STUDY#<uid>`` | ``SERIES#<series uid>``              |
| instance | ``STUDY#<uid>`` | ``INSTANCE#<series uid>#<sop uid>``  |
| part     | ``STUDY#<uid>`` | ``PART#<series uid>#<part id>``      |
| lookup   | ``STUDY#<uid>`` | ``LOOKUP#<attr>#<value>``            |
| site     | ``SITES``       | ``<site>`` (one per gateway/site)    |

Index ``ByLookup`` (``gsi1pk``/``gsi1sk``) holds only lookup items, one per
searchable value of a study: ``<site>#PID#<PatientID>`` and
``<site>#ACC#<AccessionNumber>`` and ``<site>#MOD#<Modality>`` sorted by
``<StudyDate>#<uid>``; ``<site>#NAME#<first letter>`` sorted by
``<normalised name word>#<uid>``, so that a name prefix is a ``begins_with``.

Index ``BySiteDate`` (``gsi2pk``/``gsi2sk``) holds study items:
``SITE#<site>`` sorted by ``<StudyDate><StudyTime>#<uid>``, which answers
"studies of this site between two dates" without a Scan.
"""

from __future__ import annotations

STUDY_SK = "#STUDY"
SITES_PK = "SITES"
LOOKUP_INDEX = "ByLookup"
SITE_DATE_INDEX = "BySiteDate"

# Sort key used for a study without a StudyDate: it sorts before every real date.
NO_DATE = "00000000"


def study_pk(study_uid: str) -> str:
    return f"STUDY#{study_uid}"


def study_uid_of(pk: str) -> str:
    return pk.removeprefix("STUDY#")


def series_sk(series_uid: str) -> str:
    return f"SERIES#{series_uid}"


def instance_sk(series_uid: str, sop_uid: str) -> str:
    return f"INSTANCE#{series_uid}#{sop_uid}"


def instance_prefix(series_uid: str | None = None) -> str:
    return f"INSTANCE#{series_uid}#" if series_uid else "INSTANCE#"


def part_sk(series_uid: str, part_id: str) -> str:
    return f"PART#{series_uid}#{part_id}"


def part_prefix(series_uid: str) -> str:
    return f"PART#{series_uid}#"


def lookup_sk(attr: str, value: str) -> str:
    return f"LOOKUP#{attr}#{value}"


def lookup_pk(site: str, attr: str, key: str) -> str:
    return f"{site}#{attr}#{key}"


def site_pk(site: str) -> str:
    return f"SITE#{site}"


def site_date_sk(study_date: str, study_time: str, study_uid: str) -> str:
    return f"{study_date or NO_DATE}{study_time}#{study_uid}"


# Bucket layout: UIDs and part ids only, never PHI.
INCOMING_PREFIX = "incoming/"
METADATA_PREFIX = "metadata/"
REPORTS_PREFIX = "reports/"


class NotAPartKey(ValueError):
    """An object key that is not ``incoming/<study>/<series>/<part>.zip``."""


def parse_incoming_key(key: str) -> tuple[str, str, str]:
    """Return (study UID, series UID, part id) of a part's object key."""
    parts = key.split("/")
    if (
        len(parts) != 4
        or f"{parts[0]}/" != INCOMING_PREFIX
        or not parts[3].endswith(".zip")
        or not all(parts[1:3])
        or len(parts[3]) <= len(".zip")
    ):
        raise NotAPartKey(f"not a part key: {key!r}")
    return parts[1], parts[2], parts[3].removesuffix(".zip")


def incoming_key(study_uid: str, series_uid: str, part_id: str) -> str:
    return f"{INCOMING_PREFIX}{study_uid}/{series_uid}/{part_id}.zip"


def metadata_key(study_uid: str, series_uid: str, part_id: str) -> str:
    """DICOM JSON of every instance indexed from one part (a JSON array)."""
    return f"{METADATA_PREFIX}{study_uid}/{series_uid}/{part_id}.json"


def report_key(study_uid: str, series_uid: str, part_id: str) -> str:
    return f"{REPORTS_PREFIX}{study_uid}/{series_uid}/{part_id}.json"
