"""The local stand-in's JWT check (PyJWT), held to what API Gateway's HTTP API JWT authorizer checks."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest
from query.access import caller_from_event

from local_cloud.api_server import ApiServer, http_api_event, without_query
from local_cloud.dev_token import (
    AUDIENCE,
    ISSUER,
    TokenRejected,
    authorizer_context,
    check,
    issue,
    new_secret,
    verify,
)

SECRET = new_secret()
# Claims are built when the module is collected, which can be many minutes before a test runs
# (the unit tier runs after the e2e and SAM tiers): validity windows are hours, not minutes.
NOW = int(time.time())
HOUR = 3600


def signed(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def valid(**changes: Any) -> dict[str, Any]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "iat": NOW, "nbf": NOW, "exp": NOW + 24 * HOUR}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def cognito_access_token(groups: list[str], scope: str = "openid dicom/read") -> dict[str, Any]:
    """The claims of a Cognito user pool access token (no aud: client_id names the app client)."""
    return {
        "sub": "8f0e4c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
        "cognito:groups": groups,
        "iss": ISSUER,
        "version": 2,
        "client_id": AUDIENCE,
        "origin_jti": "0d5c7f9e-1a2b-4c3d-9e8f-7a6b5c4d3e2f",
        "event_id": "3c2b1a09-8f7e-4d6c-b5a4-938271605f4e",
        "token_use": "access",
        "scope": scope,
        "auth_time": NOW,
        "exp": NOW + 24 * HOUR,
        "iat": NOW,
        "jti": "6e5d4c3b-2a19-4f8e-9d7c-6b5a49382716",
        "username": "radiologist",
    }


def test_an_issued_token_passes_and_its_claims_come_back() -> None:
    token = issue(SECRET, sites="site-a")
    assert check(SECRET, token)["sites"] == "site-a"
    assert verify(new_secret(), token) is None
    assert verify(SECRET, token[:-2] + "xx") is None


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (valid(exp=NOW - 1), "expired"),
        (valid(nbf=NOW + 12 * HOUR), "not valid yet"),
        (valid(iat=NOW + 12 * HOUR), "not valid yet"),
        (valid(iss="https://elsewhere.example/"), "issuer"),
        (valid(iss=None), "lacks the iss claim"),
        (valid(aud="another-api"), "audience"),
        (valid(aud=None), "audience"),
        (valid(aud=["x", "y"]), "audience"),
        # client_id counts only when there is no aud (API Gateway evaluates aud first)
        (valid(aud="another-api", client_id=AUDIENCE), "audience"),
        # claim types: API Gateway refuses them, the old check crashed or let them through
        (valid(exp="tomorrow"), "invalid token"),
        (valid(nbf="now"), "invalid token"),
        (valid(exp=None), "lacks the exp claim"),
        (valid(scope=["dicom/read"]), "scope claim"),
        (valid(scp=[1, 2]), "scp claim"),
        (valid(client_id=7, aud=None), "audience"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_what_api_gateway_refuses_is_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        check(SECRET, signed(claims))


def test_audience_from_a_list_or_from_client_id_when_aud_is_absent() -> None:
    assert check(SECRET, signed(valid(aud=["other", AUDIENCE])))["sub"] == "u"
    assert check(SECRET, signed(valid(aud=None, client_id=AUDIENCE)))["sub"] == "u"


@pytest.mark.parametrize("algorithm", ["HS512", "none"])
def test_only_the_allowed_algorithm_is_accepted(algorithm: str) -> None:
    token = signed(valid(), "k" * 64 if algorithm != "none" else "", algorithm)
    with pytest.raises(TokenRejected, match="invalid token"):
        check(SECRET, token)


def test_claims_reach_the_function_as_api_gateway_stringifies_them() -> None:
    context = authorizer_context(
        {"sites": ["a", "b"], "exp": 1700000000, "scope": "dicom/read dicom/write", "flag": True}
    )
    assert context["jwt"]["claims"] == {
        "sites": "[a b]",
        "exp": "1700000000",
        "scope": "dicom/read dicom/write",
        "flag": "true",
    }
    assert context["jwt"]["scopes"] == ["dicom/read", "dicom/write"]
    assert authorizer_context({"scp": ["dicom/read"]})["jwt"]["scopes"] == ["dicom/read"]


def test_a_cognito_access_token_gives_its_site_groups_and_scopes_to_the_function() -> None:
    # GIVEN an access token as Cognito issues it, the user in two site groups and another group
    claims = check(SECRET, signed(cognito_access_token(["site:st-mary", "site:north", "admins"])))
    event = {"requestContext": {"authorizer": authorizer_context(claims)}}
    # WHEN the function reads its authorizer context THEN the sites are the groups' sites only
    caller = caller_from_event(event)
    assert caller.sites == frozenset({"st-mary", "north"})
    assert caller.scopes == frozenset({"openid", "dicom/read"})
    # AND a user-writable attribute never names a site; the group site:* names every site
    claims = check(SECRET, signed({**cognito_access_token([]), "custom:sites": "*"}))
    assert (
        caller_from_event({"requestContext": {"authorizer": authorizer_context(claims)}}).sites == frozenset()
    )
    claims = check(SECRET, signed(cognito_access_token(["site:*"])))
    assert caller_from_event({"requestContext": {"authorizer": authorizer_context(claims)}}).sites is None


def call(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback test server
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return reply.status, {}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def test_the_local_server_answers_401_for_bad_tokens_and_passes_good_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {"statusCode": 200, "body": "{}"}

    server = ApiServer("127.0.0.1", 0, handler, dev_secret=SECRET)
    server.start()
    url = f"http://127.0.0.1:{server.port}/dicomweb/studies?PatientID=PID-123&PatientName=Doe"
    try:
        with caplog.at_level(logging.INFO, logger="local_cloud.api"):
            # A non-numeric exp is a 401, not a dropped connection
            assert call(url, {"Authorization": f"Bearer {signed(valid(exp='soon'))}"})[0] == 401
            assert call(url, {})[0] == 401
            assert call(url, {"Authorization": f"Bearer {signed(valid(aud='x'))}"})[0] == 401
            token = issue(SECRET, sites=["a", "b"])
            assert call(url, {"Authorization": f"Bearer {token}", "Host": "evil.example"})[0] == 200
    finally:
        server.stop()
    [event] = seen
    assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sites"] == "[a b]"
    # The function learns the server's own name, not the client's Host header
    assert event["requestContext"]["domainName"] == f"127.0.0.1:{server.port}"
    # No PHI from query strings in the access log
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/dicomweb/studies" in logged
    assert "PID-123" not in logged
    assert "Doe" not in logged
    assert "does not have a valid audience" in logged


def test_log_lines_lose_their_query_strings() -> None:
    assert without_query("code 400, message Bad request syntax ('GET /x?PatientID=1 HTTP/1.1')") == (
        "code 400, message Bad request syntax ('GET /x?\u2026 HTTP/1.1')"
    )


def test_the_event_built_for_the_handler_keeps_the_host_header_out_of_domain_name() -> None:
    event = http_api_event("GET", "/x", {"Host": "evil.example"}, b"", "127.0.0.1", "api.local:3000")
    assert event["requestContext"]["domainName"] == "api.local:3000"
