"""QIDO-RS: search for studies, series and instances (PS3.18 10.6), answering application/dicom+json."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping

from aws_lambda_powertools.event_handler import Response
from common import attributes as attrs
from common import keys
from common.dicom_json import DicomJson, element, first_text

from query import access, links
from query.access import allowed_sites
from query.dependencies import objects, store
from query.errors import BadRequest, NotFound
from query.matching import (
    check_uid,
    date_range,
    has_wildcard,
    match_folded,
    match_text,
    time_range,
    uid_list,
)
from query.route_table import DocumentedRouter
from query.search import (
    CONTROL_PARAMETERS,
    INSTANCE_MATCHING,
    SERIES_MATCHING,
    STUDY_MATCHING,
    StudyFilter,
    find_studies,
)
from query.store import Item
from query.tags import INDEXED_TAGS, tag_of

router = DocumentedRouter()

DICOM_JSON = "application/dicom+json"
MAX_LIMIT = 1000
# A private element names the site of each result when the caller sees several (PS3.5 7.8.1).
SITE_CREATOR = "DICOM ARCHIVE SITE"
SITE_CREATOR_TAG = "00090010"
SITE_TAG = "00091001"
DEFAULT_LIMIT = 100


def _params() -> dict[str, str]:
    """Query parameters, with matching attributes given by tag (``00100020``) renamed to their keyword."""
    params: dict[str, str] = {}
    for name, value in (router.current_event.query_string_parameters or {}).items():
        known = attrs.BY_TAG.get(name.upper())
        params[known.keyword if known else name] = value
    return params


def _check_parameters(params: Mapping[str, str], allowed: set[str]) -> None:
    """BadRequest (400) for an unknown parameter, or a date or time that is not one (PS3.4 C.2.2.2.5).

    Dates and times are checked here, before any item is read: a key compared only against the
    items found would let a malformed value answer 204 whenever nothing was there to compare.
    """
    unknown = sorted(set(params) - allowed - CONTROL_PARAMETERS)
    if unknown:
        raise BadRequest(f"unsupported query parameter(s): {', '.join(unknown)}")
    for name, value in params.items():
        attribute = attrs.BY_KEYWORD.get(name)
        if attribute is None or value in ("", "*"):
            continue
        if attribute.vr == "DA":
            date_range(value, name)
        elif attribute.vr == "TM":
            time_range(value, name)


def _page(params: Mapping[str, str]) -> tuple[int, int]:
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
        offset = int(params.get("offset", 0))
    except ValueError as exc:
        raise BadRequest("limit and offset must be integers") from exc
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise BadRequest(f"limit must be 1..{MAX_LIMIT} and offset at least 0")
    return limit, offset


def _respond(results: Iterable[DicomJson], params: Mapping[str, str]) -> Response[str]:
    limit, offset = _page(params)
    page: list[DicomJson] = []
    more = False
    for index, result in enumerate(results):
        if index < offset:
            continue
        if len(page) == limit:
            more = True
            break
        page.append(result)
    if not page:
        return Response(status_code=204, content_type=DICOM_JSON, body="")
    headers = {}
    if more:
        headers["Warning"] = '299 dicomweb: "There are additional results that can be requested"'
    return Response(200, DICOM_JSON, json.dumps(page, ensure_ascii=False), headers=headers)


def base_url() -> str:
    """``<public base>/dicomweb`` (query.links: never from request headers)."""
    return links.dicomweb_base(router.current_event.raw_event)


def site_base(item: Item) -> str:
    """Base of retrieve URLs for an item: with ``/partitions/<site>`` when answers name partitions."""
    return access.partition_base(base_url(), str(item.get("site", "")), store)


def _tag_site(result: DicomJson, item: Item) -> DicomJson:
    """Name the item's site in a private element when the caller sees several sites."""
    if access.site_in_urls(store):
        result[SITE_CREATOR_TAG] = {"vr": "LO", "Value": [SITE_CREATOR]}
        result[SITE_TAG] = {"vr": "LO", "Value": [str(item.get("site", ""))]}
    return result


def study_json(study: Item) -> DicomJson:
    """A study item as a QIDO-RS study result (PS3.18 10.6.3.3.1), DICOM JSON with tags sorted.

    Adds Modalities in Study, the numbers of related series and instances, and Retrieve URL.
    """
    result: DicomJson = _tag_site(json.loads(study["json"]), study)
    modalities = sorted(study.get("modalities", ()))
    result[attrs.MODALITIES_IN_STUDY.tag] = element(attrs.MODALITIES_IN_STUDY, *modalities)
    result[attrs.STUDY_RELATED_SERIES.tag] = element(
        attrs.STUDY_RELATED_SERIES, int(study.get("series_count", 0))
    )
    result[attrs.STUDY_RELATED_INSTANCES.tag] = element(
        attrs.STUDY_RELATED_INSTANCES, int(study.get("instance_count", 0))
    )
    result[attrs.RETRIEVE_URL.tag] = element(
        attrs.RETRIEVE_URL, f"{site_base(study)}/studies/{study['study_uid']}"
    )
    return dict(sorted(result.items()))


def series_json(series: Item) -> DicomJson:
    """A series item as a QIDO-RS series result (PS3.18 10.6.3.3.2) with Retrieve URL."""
    result: DicomJson = _tag_site(json.loads(series["json"]), series)
    result[attrs.SERIES_RELATED_INSTANCES.tag] = element(
        attrs.SERIES_RELATED_INSTANCES, int(series.get("instance_count", 0))
    )
    url = f"{site_base(series)}/studies/{series['study_uid']}/series/{series['series_uid']}"
    result[attrs.RETRIEVE_URL.tag] = element(attrs.RETRIEVE_URL, url)
    return dict(sorted(result.items()))


def instance_json(instance: Item) -> DicomJson:
    """An instance item as a QIDO-RS instance result (PS3.18 10.6.3.3.3) with Retrieve URL."""
    result: DicomJson = _tag_site(json.loads(instance["json"]), instance)
    url = (
        f"{site_base(instance)}/studies/{instance['study_uid']}/series/{instance['series_uid']}"
        f"/instances/{instance['sop_uid']}"
    )
    result[attrs.RETRIEVE_URL.tag] = element(attrs.RETRIEVE_URL, url)
    return dict(sorted(result.items()))


def visible_study(study_uid: str) -> Item:
    """The study item if one site the caller may read holds it (see query.access.visible_study)."""
    return access.visible_study(store, study_uid)


def visible_instance(study_uid: str, series_uid: str, sop_uid: str) -> Item:
    """The instance item if its study is visible to the caller, else 404."""
    return access.visible_instance(store, study_uid, series_uid, sop_uid)


def _with_study(level: DicomJson, study: Item) -> DicomJson:
    """Series and instance results repeat their study's attributes, as PS3.18 10.6.3 lists."""
    study_level: DicomJson = json.loads(study["json"])
    return dict(sorted({**study_level, **level}.items()))


def _match_series(series: Item, params: Mapping[str, str]) -> bool:
    if "SeriesInstanceUID" in params and series["series_uid"] not in uid_list(
        params["SeriesInstanceUID"], "SeriesInstanceUID"
    ):
        return False
    for keyword in ("Modality", "SeriesNumber"):
        if keyword in params and not match_text(str(series.get(keyword, "")), params[keyword]):
            return False
    if "SeriesDescription" in params or "SeriesDate" in params:
        level: DicomJson = json.loads(series.get("json") or "{}")
        description = params.get("SeriesDescription", "")
        if description not in ("", "*") and not match_folded(
            first_text(level, "SeriesDescription"), description
        ):
            return False
        if params.get("SeriesDate") and not date_range(params["SeriesDate"], "SeriesDate").contains(
            first_text(level, "SeriesDate")
        ):
            return False
    return True


def _match_instance(instance: Item, params: Mapping[str, str]) -> bool:
    if "SOPInstanceUID" in params and instance["sop_uid"] not in uid_list(
        params["SOPInstanceUID"], "SOPInstanceUID"
    ):
        return False
    if "SOPClassUID" in params and instance.get("SOPClassUID") not in uid_list(
        params["SOPClassUID"], "SOPClassUID"
    ):
        return False
    if "InstanceNumber" in params:
        return str(instance.get("InstanceNumber", "")) == params["InstanceNumber"].strip()
    return True


def _include_fields(params: Mapping[str, str]) -> tuple[bool, set[str]]:
    """(``all`` asked, tags asked) of the ``includefield`` parameter; unknown keywords are a 400."""
    raw = params.get("includefield", "")
    tags: set[str] = set()
    everything = False
    for word in (w.strip() for w in raw.replace("\\", ",").split(",")):
        if not word:
            continue
        if word == "all":
            everything = True
        else:
            tags.add(tag_of(word))
    return everything, tags


def _series_metadata(study: Item, series_uid: str) -> dict[str, DicomJson]:
    """Full DICOM JSON headers of a series, by SOP Instance UID (one GET per part)."""
    headers: dict[str, DicomJson] = {}
    for part in store.study_children(study, keys.part_prefix(series_uid)):
        if not part.get("metadata_key"):
            continue
        for header in objects.metadata(str(part["metadata_key"])):
            sop = (header.get("00080018") or {}).get("Value") or [""]
            headers.setdefault(str(sop[0]), header)
    return headers


def _with_header_fields(
    result: DicomJson, header: DicomJson | None, everything: bool, tags: set[str]
) -> DicomJson:
    if not header:
        return result
    extra = {
        t: v
        for t, v in header.items()
        if t not in result and (everything or t in tags) and "BulkDataURI" not in v and t[:4] != "7FE0"
    }
    return dict(sorted({**result, **extra}.items())) if extra else result


@router.get("/dicomweb/studies")
def search_studies() -> Response[str]:
    """Search for studies (QIDO-RS, PS3.18 10.6).

    Matching as PS3.4 C.2.2.2; ``limit``, ``offset``, ``includefield`` and ``fuzzymatching``
    as PS3.18 8.3.4. Raises BadRequest (400) for an unknown or malformed parameter.
    """
    params = _params()
    _check_parameters(params, STUDY_MATCHING)
    _include_fields(params)
    flt = StudyFilter.from_params(params)
    studies = find_studies(store, allowed_sites(store), flt)
    return _respond((study_json(s) for s in studies), params)


@router.get("/dicomweb/studies/<study_uid>/series")
def search_series(study_uid: str) -> Response[str]:
    """Search for the series of a study (QIDO-RS, PS3.18 10.6).

    Raises NotFound (404) when the study is not visible and BadRequest (400) for a bad parameter.
    """
    params = _params()
    _check_parameters(params, SERIES_MATCHING)
    _include_fields(params)
    study = visible_study(study_uid)
    series = store.study_children(study, "SERIES#")
    matching = (_with_study(series_json(s), study) for s in series if _match_series(s, params))
    return _respond(matching, params)


@router.get("/dicomweb/series")
def search_all_series() -> Response[str]:
    """Series of every visible study: the study filter (ModalitiesInStudy from Modality) picks the studies."""
    params = _params()
    _check_parameters(params, SERIES_MATCHING | STUDY_MATCHING)
    _include_fields(params)
    study_params = dict(params)
    modality = params.get("Modality", "")
    if modality and not has_wildcard(modality) and "ModalitiesInStudy" not in params:
        study_params["ModalitiesInStudy"] = modality
    flt = StudyFilter.from_params(study_params)

    def matching() -> Iterator[DicomJson]:
        for study in find_studies(store, allowed_sites(store), flt):
            for series in store.study_children(study, "SERIES#"):
                if _match_series(series, params):
                    yield _with_study(series_json(series), study)

    return _respond(matching(), params)


def _instances_of(
    study: Item, series_uids: list[str] | None, params: Mapping[str, str]
) -> Iterator[DicomJson]:
    everything, tags = _include_fields(params)
    wants_header = everything or bool(tags - INDEXED_TAGS)
    series_items = {
        str(s["series_uid"]): s
        for s in store.study_children(study, "SERIES#")
        if series_uids is None or s["series_uid"] in series_uids
    }
    for series_uid, series in series_items.items():
        if not _match_series(series, params):
            continue
        headers = _series_metadata(study, series_uid) if wants_header else {}
        series_level: DicomJson = json.loads(series["json"])
        for instance in store.study_children(study, keys.instance_prefix(series_uid)):
            if _match_instance(instance, params):
                result = _with_study({**series_level, **instance_json(instance)}, study)
                yield _with_header_fields(result, headers.get(str(instance["sop_uid"])), everything, tags)


@router.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances")
def search_instances(study_uid: str, series_uid: str) -> Response[str]:
    """Search for the instances of a series (QIDO-RS, PS3.18 10.6).

    Raises NotFound (404) for an unknown study or series, BadRequest (400) for a bad parameter.
    """
    params = _params()
    _check_parameters(params, INSTANCE_MATCHING)
    _include_fields(params)
    study = visible_study(study_uid)
    check_uid(series_uid, "SeriesInstanceUID")
    series = store.in_study(study, keys.series_sk(series_uid))
    if series is None:
        raise NotFound("series not found")
    return _respond(_instances_of(study, [series_uid], params), params)


@router.get("/dicomweb/studies/<study_uid>/instances")
def search_study_instances(study_uid: str) -> Response[str]:
    """Search for the instances of a study (QIDO-RS, PS3.18 10.6).

    Raises NotFound (404) when the study is not visible and BadRequest (400) for a bad parameter.
    """
    params = _params()
    _check_parameters(params, INSTANCE_MATCHING | SERIES_MATCHING)
    _include_fields(params)
    study = visible_study(study_uid)
    return _respond(_instances_of(study, None, params), params)
