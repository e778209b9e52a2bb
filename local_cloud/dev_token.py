"""A development JWT (HS256) for the local API, standing in for API Gateway's JWT authorizer.

``local-cloud run --auth`` makes a random secret, prints a token with every
scope and site (``*``), and then accepts only requests that carry a valid
token; its claims go into ``requestContext.authorizer.jwt`` as API Gateway puts
them. Standard library only: a dev convenience, not a production verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

DEFAULT_SCOPES = ("dicom/read", "dicom/write")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def issue(
    secret: str, *, sites: str = "*", scopes: tuple[str, ...] = DEFAULT_SCOPES, ttl: int = 86400
) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {
        "sub": "local-developer",
        "iat": now,
        "exp": now + ttl,
        "scope": " ".join(scopes),
        "sites": sites,
    }
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def verify(secret: str, token: str) -> dict[str, Any] | None:
    """The token's claims if its signature and expiry are valid, else None."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        if json.loads(_unb64(header)).get("alg") != "HS256":
            return None
        claims: dict[str, Any] = json.loads(_unb64(payload))
    except (ValueError, json.JSONDecodeError):
        return None
    if int(claims.get("exp", 0)) < time.time():
        return None
    return claims


def authorizer_context(claims: dict[str, Any]) -> dict[str, Any]:
    """``requestContext.authorizer`` as API Gateway's JWT authorizer fills it."""
    scopes = str(claims.get("scope", "")).split()
    return {"jwt": {"claims": {k: str(v) for k, v in claims.items()}, "scopes": scopes}}
