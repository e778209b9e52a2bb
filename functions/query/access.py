"""Who is asking: JWT scopes and sites from the API Gateway authorizer context.

API Gateway's JWT authorizer puts the verified token's claims and scopes into
``requestContext.authorizer.jwt``. The function checks a read scope for
queries and a write scope for STOW-RS, and restricts every answer to the sites
named in the ``sites`` claim, or by the caller's Cognito groups named
``site:<site>`` (``cognito:groups``, which only an administrator can change);
``*`` (or the group ``site:*``) names every site. A user-writable attribute such
as Cognito's ``custom:sites`` is never read.

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

from query.errors import Forbidden, Unauthorized
from query.store import IndexStore

SITE_CLAIMS = ("sites",)
# Cognito access tokens list the user's groups; groups named site:<site> grant that site.
GROUPS_CLAIM = "cognito:groups"
SITE_GROUP_PREFIX = "site:"


@dataclass(frozen=True)
class Caller:
    authenticated: bool
    scopes: frozenset[str]
    sites: frozenset[str] | None  # None: every site


OPEN = Caller(authenticated=False, scopes=frozenset(), sites=None)
_current: ContextVar[Caller] = ContextVar("caller", default=OPEN)


def read_scope() -> str:
    return os.environ.get("READ_SCOPE", "dicom/read")


def write_scope() -> str:
    return os.environ.get("WRITE_SCOPE", "dicom/write")


def _words(value: Any) -> list[str]:
    """A claim as API Gateway passes it: a list, or a string like ``a b``, ``a,b`` or ``[a b]``."""
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [w for w in re.split(r"[\s,\[\]\"]+", str(value or "")) if w]


def caller_from_event(event: dict[str, Any]) -> Caller:
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
    _current.set(caller)


def current_caller() -> Caller:
    return _current.get()


def require(scope: str) -> Caller:
    caller = current_caller()
    if caller is OPEN:
        return caller
    if not caller.authenticated:
        raise Unauthorized("a bearer token is required")
    if scope not in caller.scopes:
        raise Forbidden(f"the token lacks the {scope} scope")
    return caller


def allowed_sites(store: IndexStore) -> list[str]:
    """Sites the caller may read (checks the read scope)."""
    caller = require(read_scope())
    registered = store.sites()
    if caller.sites is None:
        return registered
    return [s for s in registered if s in caller.sites]
