"""Key design of the index table and of the bucket, in one place.

A site is a partition: every key of a study starts with its site, so the same
StudyInstanceUID received by two sites is two studies that never share an item,
and every read starts from a site the caller may see. A study, its series and
its instances are one Query on the study's partition:

| item       | pk                                | sk                                            |
| ---------- | --------------------------------- | --------------------------------------------- |
| study      | ``SITE#<site>#STUDY#<uid>``       | ``#STUDY``                                    |
| series     | ``SITE#<site>#STUDY#<uid>``       | ``SERIES#<series uid>``                       |
| instance   | ``SITE#<site>#STUDY#<uid>``       | ``INSTANCE#<series uid>#<sop uid>``           |
| version    | ``SITE#<site>#STUDY#<uid>``       | ``VERSION#<series uid>#<sop uid>#<part id>``  |
| part       | ``SITE#<site>#STUDY#<uid>``       | ``PART#<series uid>#<part id>``               |
| lookup     | ``SITE#<site>#STUDY#<uid>``       | ``LOOKUP#<attr>#<value>``                     |
| conflict   | ``CONFLICTS#<site>``              | ``<study uid>#<series uid>#<part id>``        |
| site       | ``SITES``                         | ``<site>`` (one per gateway/site)             |

A *version* item is an earlier copy of an instance (same SOP Instance UID,
other bytes) that a later one replaced in the index: the instance's history.
A *conflict* item is a part's instances kept out of a study because their
patient differs from the study's (open until an administrator resolves it).

Index ``ByLookup`` (``gsi1pk``/``gsi1sk``) holds only lookup items, one per
searchable value of a study: ``<site>#PID#<PatientID>`` and
``<site>#ACC#<AccessionNumber>`` and ``<site>#MOD#<Modality>`` sorted by
``<StudyDate>#<uid>``; ``<site>#NAME#<first letter>`` sorted by
``<normalised name word>#<uid>``, so that a name prefix is a ``begins_with``.

Index ``BySiteDate`` (``gsi2pk``/``gsi2sk``) holds study items:
``SITE#<site>`` sorted by ``<StudyDate><StudyTime>#<uid>``, which answers
"studies of this site between two dates" without a Scan.

Sites are ``[A-Za-z0-9._-]{1,64}`` (:data:`SITE_PATTERN`) and UIDs are dotted
digits (``common.uids``): neither contains ``#`` or ``/``, so keys parse back.
"""

from __future__ import annotations

import re

STUDY_SK = "#STUDY"
SITES_PK = "SITES"
LOOKUP_INDEX = "ByLookup"
SITE_DATE_INDEX = "BySiteDate"
SITE_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Sort key used for a study without a StudyDate: it sorts before every real date.
NO_DATE = "00000000"


def is_site(value: str) -> bool:
    """``True`` if ``value`` is a site name that can appear in a key."""
    return bool(SITE_PATTERN.fullmatch(value))


def study_pk(site: str, study_uid: str) -> str:
    """Partition of one study of one site."""
    return f"SITE#{site}#STUDY#{study_uid}"


def study_of(pk: str) -> tuple[str, str]:
    """(site, study UID) of a study partition key; ValueError for any other key."""
    head, site, kind, uid = [*pk.split("#"), "", "", ""][:4]
    if head != "SITE" or kind != "STUDY" or not site or not uid or pk.count("#") != 3:
        raise ValueError("not a study partition key")
    return site, uid


# The layout before sites were partitions (``STUDY#<uid>``): only the migration reads it.
LEGACY_STUDY_PREFIX = "STUDY#"


def legacy_study_pk(study_uid: str) -> str:
    """A study partition of the pre-partition layout, removed by ``dicom-reindex --drop-legacy``."""
    return f"{LEGACY_STUDY_PREFIX}{study_uid}"


def series_sk(series_uid: str) -> str:
    """Sort key of a series item: ``SERIES#<series uid>``."""
    return f"SERIES#{series_uid}"


def instance_sk(series_uid: str, sop_uid: str) -> str:
    """Sort key of an instance item: ``INSTANCE#<series uid>#<sop uid>``."""
    return f"INSTANCE#{series_uid}#{sop_uid}"


def instance_prefix(series_uid: str | None = None) -> str:
    """Sort key prefix of the instances of one series, or of every instance when None."""
    return f"INSTANCE#{series_uid}#" if series_uid else "INSTANCE#"


def version_sk(series_uid: str, sop_uid: str, part_id: str) -> str:
    """An earlier version of an instance, named by the part it came in."""
    return f"VERSION#{series_uid}#{sop_uid}#{part_id}"


def version_prefix(series_uid: str, sop_uid: str) -> str:
    """Sort key prefix of the earlier versions of one instance."""
    return f"VERSION#{series_uid}#{sop_uid}#"


def part_sk(series_uid: str, part_id: str) -> str:
    """Sort key of a part item: ``PART#<series uid>#<part id>``."""
    return f"PART#{series_uid}#{part_id}"


def part_prefix(series_uid: str) -> str:
    """Sort key prefix of the parts of one series."""
    return f"PART#{series_uid}#"


def lookup_sk(attr: str, value: str) -> str:
    """Sort key of a lookup item: ``LOOKUP#<attr>#<value>``."""
    return f"LOOKUP#{attr}#{value}"


def lookup_pk(site: str, attr: str, key: str) -> str:
    """Partition key in the ``ByLookup`` index: ``<site>#<attr>#<key>`` (for example attr ``PID``)."""
    return f"{site}#{attr}#{key}"


def site_pk(site: str) -> str:
    """Partition key in the ``BySiteDate`` index: ``SITE#<site>``."""
    return f"SITE#{site}"


def site_date_sk(study_date: str, study_time: str, study_uid: str) -> str:
    """Sort key in the ``BySiteDate`` index: ``<StudyDate><StudyTime>#<uid>``.

    A study without a date sorts first (:data:`NO_DATE`).
    """
    return f"{study_date or NO_DATE}{study_time}#{study_uid}"


def conflicts_pk(site: str) -> str:
    """Partition of one site's patient conflicts (a Query lists them)."""
    return f"CONFLICTS#{site}"


def conflict_sk(study_uid: str, series_uid: str, part_id: str) -> str:
    """Sort key of a conflict item: ``<study uid>#<series uid>#<part id>``."""
    return f"{study_uid}#{series_uid}#{part_id}"


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
    """Object key of a part's zip: ``incoming/<study>/<series>/<part id>.zip``."""
    return f"{INCOMING_PREFIX}{study_uid}/{series_uid}/{part_id}.zip"


def metadata_key(study_uid: str, series_uid: str, part_id: str) -> str:
    """DICOM JSON of every instance indexed from one part (a JSON array)."""
    return f"{METADATA_PREFIX}{study_uid}/{series_uid}/{part_id}.json"


def report_key(study_uid: str, series_uid: str, part_id: str) -> str:
    """Object key of a part's ingest report (JSON)."""
    return f"{REPORTS_PREFIX}{study_uid}/{series_uid}/{part_id}.json"
