"""The local API server applies the template's CORS settings, as API Gateway's HTTP API does."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import pytest

from local_cloud.api_server import ApiServer
from local_cloud.cors import CorsPolicy
from local_cloud.dev_token import issue, new_secret
from local_cloud.template import load_template, resource

VIEWER = "http://127.0.0.1:3001"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "[]"}


@pytest.fixture
def server() -> Iterator[tuple[ApiServer, str]]:
    secret = new_secret()
    api = ApiServer("127.0.0.1", 0, handler, dev_secret=secret, cors=CorsPolicy.from_template([VIEWER]))
    api.start()
    try:
        yield api, secret
    finally:
        api.stop()


def request(api: ApiServer, method: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.request(method, "/dicomweb/studies", headers=headers)
    response = connection.getresponse()
    response.read()
    return response


def test_policy_comes_from_the_template() -> None:
    template_cors = resource(load_template(), "DicomApi")["CorsConfiguration"]
    policy = CorsPolicy.from_template([VIEWER + "/"])
    assert policy.allow_origins == (VIEWER,)
    assert set(policy.allow_methods) == {m.upper() for m in template_cors["AllowMethods"]}
    assert "authorization" in policy.allow_headers
    assert policy.max_age == template_cors["MaxAge"]


def test_preflight_with_authorization_passes_without_a_token(server: tuple[ApiServer, str]) -> None:
    api, _secret = server
    preflight = {
        "Origin": VIEWER,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,accept",
    }
    reply = request(api, "OPTIONS", preflight)
    assert reply.status == 204
    assert reply.getheader("Access-Control-Allow-Origin") == VIEWER
    assert "authorization" in (reply.getheader("Access-Control-Allow-Headers") or "").lower()
    # another origin gets no CORS headers: the browser blocks it
    other = request(api, "OPTIONS", {**preflight, "Origin": "https://evil.example"})
    assert other.getheader("Access-Control-Allow-Origin") is None


def test_answers_carry_cors_headers_for_the_allowed_origin(server: tuple[ApiServer, str]) -> None:
    api, secret = server
    ok = request(api, "GET", {"Origin": VIEWER, "Authorization": f"Bearer {issue(secret)}"})
    assert ok.status == 200 and ok.getheader("Access-Control-Allow-Origin") == VIEWER
    assert "Warning" in (ok.getheader("Access-Control-Expose-Headers") or "")
    # a 401 is readable by the viewer too (it can then ask the user to sign in)
    denied = request(api, "GET", {"Origin": VIEWER})
    assert denied.status == 401 and denied.getheader("Access-Control-Allow-Origin") == VIEWER
    assert (
        request(api, "GET", {"Authorization": f"Bearer {issue(secret)}"}).getheader(
            "Access-Control-Allow-Origin"
        )
        is None
    )
