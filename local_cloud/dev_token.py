"""The local stand-in's JWT authorizer: tokens checked with PyJWT as API Gateway's HTTP API checks them.

``local-cloud run --auth`` makes a random secret, prints a token with every scope and
site (``*``), and then serves only requests whose bearer token passes :func:`check`;
the claims then reach the function in ``requestContext.authorizer.jwt`` in the shape
API Gateway gives them (:func:`authorizer_context`). Tests use the same two functions.

What API Gateway's JWT authorizer checks (HTTP API developer guide, "Control access to
HTTP APIs with JWT authorizers"), and so does :func:`check`:

- the signature, with an allowed algorithm (API Gateway: the issuer's RSA keys from its
  JWKS; here: HS256 with the stand-in's secret, the one difference);
- ``iss`` equals the configured issuer;
- ``aud`` matches one of the configured audiences, or, only when there is no ``aud``,
  ``client_id`` does (Cognito access tokens carry ``client_id``, not ``aud``);
- ``exp`` is in the future, ``nbf`` and ``iat`` are not, and each is a number;
- ``scope`` (a space-separated string) or ``scp`` (a string or a list of strings).

A failed check is a :class:`TokenRejected` whose message is API Gateway's
``error_description`` for the ``www-authenticate`` header of the 401.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import jwt

DEFAULT_SCOPES = ("dicom/read", "dicom/write")
# The stand-in's identity provider and API audience (API Gateway: JwtIssuer / JwtAudience).
ISSUER = "https://local-cloud.invalid/dev"
AUDIENCE = "dicom-local-api"
ALGORITHMS = ["HS256"]


class TokenRejected(Exception):
    """The token fails a check; the message says which (safe to return: no claim values)."""


def new_secret() -> str:
    """A new random secret to sign development tokens with (URL-safe text)."""
    return secrets.token_urlsafe(32)


def issue(
    secret: str,
    *,
    sites: str | list[str] = "*",
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    ttl: int = 86400,
    **claims: Any,
) -> str:
    """A signed token for the stand-in: ``iss``/``aud`` as :func:`check` expects, valid ``ttl`` seconds.

    Keyword ``claims`` are added or override the defaults (tests shape Cognito tokens with them).
    """
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "local-developer",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "scope": " ".join(scopes),
        "sites": sites,
        **claims,
    }
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def _audience_matches(claims: dict[str, Any], audiences: tuple[str, ...]) -> bool:
    aud = claims.get("aud")
    if aud is None:
        client_id = claims.get("client_id")
        return isinstance(client_id, str) and client_id in audiences
    values = aud if isinstance(aud, list) else [aud]
    return any(isinstance(v, str) and v in audiences for v in values)


def _check_types(claims: dict[str, Any]) -> None:
    scope = claims.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise TokenRejected("the scope claim must be a space-separated string")
    scp = claims.get("scp")
    if scp is not None and not (
        isinstance(scp, str) or (isinstance(scp, list) and all(isinstance(s, str) for s in scp))
    ):
        raise TokenRejected("the scp claim must be a string or a list of strings")
    for name in ("sub", "client_id", "token_use"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenRejected(f"the {name} claim must be a string")


def check(
    secret: str,
    token: str,
    *,
    issuer: str = ISSUER,
    audiences: tuple[str, ...] = (AUDIENCE,),
) -> dict[str, Any]:
    """The token's claims once every check of the module docstring passed; else :class:`TokenRejected`."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            issuer=issuer,
            options={"require": ["exp", "iss"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("the token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenRejected("the token is not valid yet") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"the token lacks the {exc.claim} claim") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenRejected("the token does not have a valid issuer") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenRejected("the token's signature is not valid") from exc
    except jwt.InvalidTokenError as exc:
        # Malformed, wrong algorithm, or a claim of the wrong type (exp/nbf/iat not numbers).
        raise TokenRejected(f"invalid token: {type(exc).__name__}") from exc
    if not _audience_matches(claims, audiences):
        raise TokenRejected("the token does not have a valid audience")
    _check_types(claims)
    return claims


def verify(secret: str, token: str) -> dict[str, Any] | None:
    """The token's claims if :func:`check` accepts it, else None."""
    try:
        return check(secret, token)
    except TokenRejected:
        return None


def _claim_text(value: Any) -> str:
    """A claim value as API Gateway passes it on: strings as they are, lists as ``[a b]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_claim_text(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"))


def authorizer_context(claims: dict[str, Any]) -> dict[str, Any]:
    """``requestContext.authorizer`` as API Gateway's JWT authorizer fills it (payload format 2.0).

    Every claim value is a string (numbers as digits, lists as ``[a b]``); ``scopes`` lists
    the ``scope`` (or ``scp``) claim's entries.
    """
    scope = claims.get("scope")
    scp = claims.get("scp")
    if isinstance(scope, str):
        scopes = scope.split()
    elif isinstance(scp, list):
        scopes = [str(s) for s in scp]
    elif isinstance(scp, str):
        scopes = scp.split()
    else:
        scopes = []
    return {"jwt": {"claims": {k: _claim_text(v) for k, v in claims.items()}, "scopes": scopes}}
