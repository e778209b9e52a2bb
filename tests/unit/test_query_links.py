"""RetrieveURL comes from configuration or API Gateway's own domain, never from Host / X-Forwarded-Proto."""

from __future__ import annotations

import pytest

from tests.conftest import Aws
from tests.helpers.query_api import index_two_patients, make_api

SPOOFED = {"host": "evil.example", "x-forwarded-proto": "gopher"}


def retrieve_urls(aws: Aws) -> list[str]:
    index_two_patients(aws, ct_instances=1)
    api = make_api(aws)
    studies = api.call("GET", "/dicomweb/studies", SPOOFED).json()
    return [s["00081190"]["Value"][0] for s in studies]


def test_retrieve_url_uses_the_configured_base(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://pacs.example.org/")
    urls = retrieve_urls(aws)
    assert len(urls) == 2
    assert all(u.startswith("https://pacs.example.org/dicomweb/studies/") for u in urls)


def test_retrieve_url_falls_back_to_api_gateways_domain_not_the_host_header(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    urls = retrieve_urls(aws)
    # tests.helpers.query_api builds events whose requestContext.domainName is 127.0.0.1
    assert all(u.startswith("https://127.0.0.1/dicomweb/studies/") for u in urls)
    assert not any("evil" in u or "gopher" in u for u in urls)


def test_a_malformed_base_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from query.links import BaseUrlError, public_base_url

    monkeypatch.setenv("PUBLIC_BASE_URL", "javascript:alert(1)")
    with pytest.raises(BaseUrlError):
        public_base_url()
