"""The browser page (issue 6), served by the API itself: ``GET /ui`` and ``GET /ui/<asset>``.

Static files live in ``query/static/`` (package data, and inside the Lambda code asset since
``CodeUri`` is ``functions/``). The page calls only the public API with the bearer token the
user gives it. These routes carry no data and need no token: the page must load before the
user can sign in.

``UI_LOGIN_URL`` (optional) is the OIDC hosted login the page's "Sign in" button opens (for
example a Cognito hosted UI ``/login`` URL with ``response_type=token`` and
``redirect_uri=<api>/ui``); without it the page asks for a pasted token (the development
token of the local stand-in).

``UI_VIEWER_URL`` is the base URL of the OHIF viewer the page links each study to
(``<base>/viewer?StudyInstanceUIDs=<uid>``); unset, ``DEFAULT_VIEWER_URL`` (the local
stand-in's), empty: no link.
"""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path

from aws_lambda_powertools.event_handler import Response

from query.errors import NotFound
from query.route_table import DocumentedRouter

router = DocumentedRouter()

STATIC = Path(__file__).resolve().parent.parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
DEFAULT_VIEWER_URL = "http://127.0.0.1:3000/viewer"
# A strict policy: the page loads only its own files and talks only to this API.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def assets() -> dict[str, str]:
    """Asset name -> content type, for the files shipped in query/static (nothing else is served)."""
    return {
        path.name: CONTENT_TYPES[path.suffix]
        for path in STATIC.iterdir()
        if path.is_file() and path.suffix in CONTENT_TYPES and path.name != "index.html"
    }


def page() -> str:
    """index.html with the login URL and the viewer base URL filled in (HTML-escaped)."""
    login_url = os.environ.get("UI_LOGIN_URL", "").strip()
    viewer_url = os.environ.get("UI_VIEWER_URL", DEFAULT_VIEWER_URL).strip()
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    text = text.replace("{{LOGIN_URL}}", html.escape(login_url, quote=True))
    return text.replace("{{VIEWER_URL}}", html.escape(viewer_url, quote=True))


@router.get("/ui")
def ui_page() -> Response[str]:
    """Get the study browser page (HTML)."""
    return Response(200, CONTENT_TYPES[".html"], page(), headers=dict(SECURITY_HEADERS))


@router.get("/ui/<asset>")
def ui_asset(asset: str) -> Response[str]:
    """Get a script or style sheet of the study browser page; 404 for any other name."""
    content_type = assets().get(asset)
    if content_type is None:
        raise NotFound("no such page asset")
    body = (STATIC / asset).read_text(encoding="utf-8")
    return Response(200, content_type, body, headers=dict(SECURITY_HEADERS))
