"""The query API's route table, recorded as the route modules register their routes.

The OpenAPI document (``/openapi.json``) and the 405-versus-404 decision need the
list of routes. Powertools keeps it in private attributes of the resolver; this
module records it through the public ``Router.route`` instead: every route module
builds its router with :class:`DocumentedRouter`, which notes each (method, rule,
handler) before handing it to Powertools unchanged. No module here imports the
resolver, so the route modules never reach back up to ``query.handler``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

Handler = TypeVar("Handler", bound=Callable[..., Any])
_PARAMETER = re.compile(r"<(\w+)>")


@dataclass(frozen=True)
class RouteEntry:
    """One route: HTTP method, Powertools rule (``/studies/<study_uid>``) and its handler."""

    method: str
    rule: str
    func: Callable[..., Any]

    @property
    def openapi_path(self) -> str:
        """The rule in OpenAPI form: ``/studies/{study_uid}``."""
        return _PARAMETER.sub(r"{\1}", self.rule)

    def matches(self, path: str) -> bool:
        """Whether a request path fits this rule (one path segment per parameter)."""
        pieces = _PARAMETER.split(self.rule)
        # split() alternates literal text and parameter names: escape the former, any segment for the latter.
        pattern = "".join(re.escape(p) if i % 2 == 0 else "[^/]+" for i, p in enumerate(pieces))
        return re.fullmatch(pattern, path) is not None


ROUTES: list[RouteEntry] = []


class DocumentedRouter(APIGatewayHttpRouter):
    """Powertools' HTTP API router that also records each route in :data:`ROUTES`."""

    def route(
        self, rule: str, method: str | list[str] | tuple[str], *args: Any, **kwargs: Any
    ) -> Callable[[Handler], Handler]:
        """Register ``rule`` for ``method`` exactly as Powertools does, and note it."""
        register: Callable[[Handler], Handler] = super().route(rule, method, *args, **kwargs)
        methods = (method,) if isinstance(method, str) else tuple(method)

        def record(func: Handler) -> Handler:
            ROUTES.extend(RouteEntry(m.upper(), rule, func) for m in methods)
            return register(func)

        return record


def other_methods(path: str, method: str) -> list[str]:
    """Methods registered for ``path`` other than ``method`` (a 405 rather than a 404)."""
    return sorted({r.method for r in ROUTES if r.method != method.upper() and r.matches(path)})
