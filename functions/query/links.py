"""The API's own base URL for the links it returns (RetrieveURL, PS3.18 10.5.3 / 10.6.3).

Never built from request headers: ``Host`` and ``X-Forwarded-Proto`` are the client's to
write, and reflecting them would let a caller plant another origin in the links a viewer
follows. The base is ``PUBLIC_BASE_URL`` when configured (a custom domain, the local
stand-in), else the domain API Gateway itself routed the request by
(``requestContext.domainName``, https).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit


class BaseUrlError(RuntimeError):
    """PUBLIC_BASE_URL is not an absolute http(s) URL without query or fragment."""


def public_base_url() -> str | None:
    """``PUBLIC_BASE_URL`` without a trailing slash, None when unset; :class:`BaseUrlError` if malformed."""
    value = os.environ.get("PUBLIC_BASE_URL", "").strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise BaseUrlError("PUBLIC_BASE_URL must be an absolute http(s) URL")
    return value


def api_base(event: Any) -> str:
    """``https://<domain>`` of the API (or ``PUBLIC_BASE_URL``) for an API Gateway v2 event."""
    configured = public_base_url()
    if configured is not None:
        return configured
    context = (event.get("requestContext") or {}) if hasattr(event, "get") else {}
    domain = str(context.get("domainName") or "localhost")
    return f"https://{domain}"


def dicomweb_base(event: Any) -> str:
    """The DICOMweb root (``<base>/dicomweb``) that RetrieveURL values start with."""
    return f"{api_base(event)}/dicomweb"
