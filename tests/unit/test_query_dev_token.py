"""The local stand-in's development token: verified like API Gateway's JWT authorizer would."""

from __future__ import annotations

from local_cloud.api_server import ApiServer, http_api_event
from local_cloud.dev_token import issue, new_secret, verify


def test_a_dev_token_is_verified_and_its_claims_reach_the_event() -> None:
    secret = new_secret()
    token = issue(secret, sites="site-a")
    assert verify(secret, token)["sites"] == "site-a"  # type: ignore[index]
    assert verify(new_secret(), token) is None
    assert verify(secret, token[:-2] + "xx") is None
    assert verify(secret, issue(secret, ttl=-10)) is None

    server = ApiServer("127.0.0.1", 0, lambda event, context: {}, dev_secret=secret)
    try:
        event = http_api_event(
            "GET", "/dicomweb/studies", {"Authorization": f"Bearer {token}"}, b"", "127.0.0.1"
        )
        assert server._authorize(event)
        jwt = event["requestContext"]["authorizer"]["jwt"]
        assert jwt["claims"]["sites"] == "site-a"
        assert jwt["scopes"] == ["dicom/read", "dicom/write"]
        assert not server._authorize(http_api_event("GET", "/", {}, b"", "127.0.0.1"))
    finally:
        server.server.server_close()
