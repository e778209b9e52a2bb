"""Swagger UI in headless Chromium with no network beyond the API: served from the package, under a CSP."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from local_cloud.api_server import ApiServer
from tests.e2e.conftest import wait_for
from tests.helpers.browser import chromium

pytestmark = pytest.mark.e2e


@pytest.fixture
def api() -> Iterator[str]:
    """The query handler behind the local HTTP server (the docs routes touch no AWS resource)."""
    os.environ.setdefault("TABLE_NAME", "unused")
    os.environ.setdefault("BUCKET_NAME", "unused")
    from query.handler import lambda_handler

    server = ApiServer("127.0.0.1", 0, lambda_handler)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def offline_browser() -> Iterator[Any]:
    """Headless Chromium in which every name but the loopback address fails to resolve (no CDN)."""
    with chromium(
        logs=("performance", "browser"),
        extra_flags=("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",),
    ) as driver:
        yield driver


def test_swagger_ui_renders_every_operation_offline_under_its_csp(api: str, offline_browser: Any) -> None:
    from selenium.webdriver.common.by import By

    with urllib.request.urlopen(api + "/openapi.json", timeout=30) as reply:  # noqa: S310 - loopback
        document = json.load(reply)
    operations = sum(len(methods) for methods in document["paths"].values())
    # WHEN the page is opened in a browser that can reach nothing but the API
    offline_browser.get(api + "/swagger")
    # THEN Swagger UI draws one block per operation of the OpenAPI document
    wait_for(
        lambda: len(offline_browser.find_elements(By.CSS_SELECTOR, ".opblock")) == operations,
        30,
        "Swagger UI to render the operations",
    )
    assert operations > 20
    assert "DICOM query API" in offline_browser.find_element(By.CSS_SELECTOR, ".info .title").text
    # AND every request went to the API itself, and the CSP refused nothing the page needs
    requested = set()
    for entry in offline_browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            parts = urllib.parse.urlsplit(url)
            if parts.scheme in ("http", "https", "ws", "wss"):  # not data: or the browser's own chrome:
                requested.add(parts.netloc)
    assert requested == {urllib.parse.urlsplit(api).netloc}
    errors = [e["message"] for e in offline_browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_swagger_files_come_from_the_package_with_a_csp(api: str) -> None:
    with urllib.request.urlopen(api + "/swagger", timeout=30) as reply:  # noqa: S310
        page = reply.read().decode()
        csp = reply.headers["Content-Security-Policy"]
    assert "cdn" not in page.lower() and "https://" not in page
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    with urllib.request.urlopen(api + "/swagger/swagger-ui-bundle.js", timeout=30) as reply:  # noqa: S310
        assert reply.headers["Content-Type"].startswith("text/javascript")
        assert b"SwaggerUIBundle" in reply.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(api + "/swagger/swagger-ui.js.map", timeout=30)  # noqa: S310
    assert missing.value.code == 404
