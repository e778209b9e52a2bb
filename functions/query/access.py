"""Who is asking: JWT scopes and sites from the API Gateway authorizer context.

API Gateway's JWT authorizer puts the verified token's claims and scopes into
``requestContext.authorizer.jwt``. The function checks a read scope for
queries and a write scope for STOW-RS, and restricts every answer to the sites
named in the ``sites`` claim, or by the caller's Cognito groups named
``site:<site>`` (``cognito:groups``, which only an administrator can change);
``*`` (or the group ``site:*``) names every site. A user-writable attribute such
as Cognito's ``custom:sites`` is never read.

A site is a data partition (as in Microsoft's DICOM server,
``/partitions/{name}/...``): a request may name one with the path prefix
``/dicomweb/partitions/<site>/`` or ``/api/partitions/<site>/`` (removed by
:func:`enter_partition` before routing) or with ``?site=``. A study UID held by
several of the caller's sites without a partition named is a 400 that lists
them; search results of a caller who sees several sites carry their site and
retrieve URLs that include the partition.

Without an authorizer context (the local stand-in run open) every registered
site is visible, unless ``REQUIRE_AUTH=true`` in the environment, which the
deployed function should set.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from common import keys

from query.errors import BadRequest, Forbidden, NotFound, Unauthorized
from query.matching import check_uid
from query.store import IndexStore, Item

SITE_CLAIMS = ("sites",)
# Cognito access tokens list the user's groups; groups named site:<site> grant that site.
GROUPS_CLAIM = "cognito:groups"
SITE_GROUP_PREFIX = "site:"


@dataclass(frozen=True)
class Caller:
    """Who calls, from the API Gateway JWT authorizer: OAuth scopes and the sites they may read.

    ``sites`` None means every site.
    """

    authenticated: bool
    scopes: frozenset[str]
    sites: frozenset[str] | None  # None: every site


OPEN = Caller(authenticated=False, scopes=frozenset(), sites=None)
_current: ContextVar[Caller] = ContextVar("caller", default=OPEN)
# The partition named by the request (path prefix or ?site=), None when none was named.
_partition: ContextVar[str | None] = ContextVar("partition", default=None)
# The sites this request may read, computed once per request.
_readable: ContextVar[list[str] | None] = ContextVar("readable", default=None)
_PARTITION_PATH = re.compile(r"^/(dicomweb|api)/partitions/([^/]*)(/.*)?$")


def read_scope() -> str:
    """Scope that allows searches and retrieves (READ_SCOPE, default ``dicom/read``)."""
    return os.environ.get("READ_SCOPE", "dicom/read")


def write_scope() -> str:
    """Scope that allows STOW-RS and other writes (WRITE_SCOPE, default ``dicom/write``)."""
    return os.environ.get("WRITE_SCOPE", "dicom/write")


def admin_scope() -> str:
    """The scope of the administrator routes (``/api/admin/...``)."""
    return os.environ.get("ADMIN_SCOPE", "dicom/admin")


def _sites_in_partition(store: IndexStore, caller: Caller) -> list[str]:
    """The registered sites ``caller`` may see, narrowed to the partition the request names.

    Raises NotFound when the named partition is not one of them (as for an unknown one).
    """
    registered = store.sites()
    sites = registered if caller.sites is None else [s for s in registered if s in caller.sites]
    asked = partition()
    if asked is not None:
        if asked not in sites:
            raise NotFound("no such partition")
        sites = [asked]
    return sites


def admin_sites(store: IndexStore) -> list[str]:
    """Sites an administrator may act on (checks the admin scope; the partition narrows them)."""
    return _sites_in_partition(store, require(admin_scope()))


def _words(value: Any) -> list[str]:
    """A claim as API Gateway passes it: a list, or a string like ``a b``, ``a,b`` or ``[a b]``."""
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [w for w in re.split(r"[\s,\[\]\"]+", str(value or "")) if w]


def caller_from_event(event: dict[str, Any]) -> Caller:
    """The caller of an HTTP API (payload 2.0) event, from ``requestContext.authorizer.jwt``.

    Without a JWT: an unauthenticated caller when REQUIRE_AUTH is true, else OPEN (local use).
    """
    jwt = ((event.get("requestContext") or {}).get("authorizer") or {}).get("jwt")
    if not jwt:
        if os.environ.get("REQUIRE_AUTH", "").lower() == "true":
            return Caller(authenticated=False, scopes=frozenset(), sites=frozenset())
        return OPEN
    claims = jwt.get("claims") or {}
    scopes = set(_words(jwt.get("scopes") or []))
    scopes.update(_words(claims.get("scope", "")))
    scopes.update(_words(claims.get("scp", "")))
    sites: set[str] = set()
    for name in SITE_CLAIMS:
        sites.update(_words(claims.get(name, "")))
    groups = _words(claims.get(GROUPS_CLAIM, ""))
    sites.update(g.removeprefix(SITE_GROUP_PREFIX) for g in groups if g.startswith(SITE_GROUP_PREFIX))
    sites.discard("")
    return Caller(True, frozenset(scopes), None if "*" in sites else frozenset(sites))


def set_caller(caller: Caller) -> None:
    """Make ``caller`` the current request's caller (context-local)."""
    _current.set(caller)
    _readable.set(None)


def enter_partition(event: dict[str, Any]) -> dict[str, Any]:
    """Note the partition a request names and return the event routed without it.

    ``/dicomweb/partitions/A/studies`` is routed as ``/dicomweb/studies`` with
    partition ``A``; ``?site=A`` names it too (and is removed from the
    parameters). A malformed site name is remembered as such: every read answers 404.
    """
    _readable.set(None)
    params = dict(event.get("queryStringParameters") or {})
    asked = params.pop("site", None)
    path = str(event.get("rawPath") or "")
    match = _PARTITION_PATH.match(path)
    if match:
        asked = match.group(2)
        path = f"/{match.group(1)}{match.group(3) or ''}"
        event = {**event, "rawPath": path}
        http = dict((event.get("requestContext") or {}).get("http") or {})
        if http:
            http["path"] = path
            event["requestContext"] = {**event["requestContext"], "http": http}
    if "site" in (event.get("queryStringParameters") or {}):
        event = {**event, "queryStringParameters": params or None}
        if event.get("rawQueryString"):
            kept = [p for p in str(event["rawQueryString"]).split("&") if p.split("=", 1)[0] != "site"]
            event["rawQueryString"] = "&".join(kept)
    _partition.set(asked)
    return event


def partition() -> str | None:
    """The site the request named, or None."""
    return _partition.get()


def current_caller() -> Caller:
    """The current request's caller."""
    return _current.get()


def require(scope: str) -> Caller:
    """The current caller, when it holds ``scope``.

    Raises Unauthorized (401) without a token and Forbidden (403) without the scope.
    """
    caller = current_caller()
    if caller is OPEN:
        return caller
    if not caller.authenticated:
        raise Unauthorized("a bearer token is required")
    if scope not in caller.scopes:
        raise Forbidden(f"the token lacks the {scope} scope")
    return caller


def allowed_sites(store: IndexStore) -> list[str]:
    """Sites the caller may read in this request (checks the read scope).

    Every registered site the token names, narrowed to the partition the request
    names; a partition the caller may not read, or that does not exist, gives 404
    (the same answer, so that a token never learns which sites exist).
    """
    caller = require(read_scope())
    cached = _readable.get()
    if cached is not None:
        return cached
    sites = _sites_in_partition(store, caller)
    _readable.set(sites)
    return sites


def site_in_urls(store: IndexStore) -> bool:
    """Whether answers name the partition in retrieve URLs (a partition was named, or several are visible)."""
    return partition() is not None or len(allowed_sites(store)) > 1


def partition_base(base: str, site: str, store: IndexStore) -> str:
    """``base`` (``https://host/dicomweb``) with ``/partitions/<site>`` when answers name partitions."""
    return f"{base}/partitions/{site}" if site_in_urls(store) else base


def visible_study(store: IndexStore, study_uid: str) -> Item:
    """The study item with this UID in the one site the caller may read that holds it.

    404 when no readable site holds it; 400 when several do and the request named
    no partition (the message lists only the caller's own sites).
    """
    check_uid(study_uid, "StudyInstanceUID")
    found = store.study_in_sites(allowed_sites(store), study_uid)
    if not found:
        raise NotFound("study not found")
    if len(found) > 1:
        names = ", ".join(str(s["site"]) for s in found)
        raise BadRequest(
            f"this StudyInstanceUID exists in several of your sites ({names}): "
            "name one with /dicomweb/partitions/<site>/... or ?site=<site>"
        )
    return found[0]


def visible_instance(store: IndexStore, study_uid: str, series_uid: str, sop_uid: str) -> Item:
    """The instance item if its study is visible to the caller, else 404."""
    study = visible_study(store, study_uid)
    check_uid(series_uid, "SeriesInstanceUID")
    check_uid(sop_uid, "SOPInstanceUID")
    item = store.get(keys.study_pk(str(study["site"]), study_uid), keys.instance_sk(series_uid, sop_uid))
    if item is None:
        raise NotFound("instance not found")
    return item
