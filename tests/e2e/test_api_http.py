"""The query API over real HTTP on the local stand-in: OpenAPI, Swagger UI, 405, JSON errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def test_openapi_document_and_swagger_ui_are_served(stack: Stack) -> None:
    status, headers, document = stack.get("/openapi.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    paths = document["paths"]
    assert "/dicomweb/studies" in paths
    assert {"get", "post"} <= set(paths["/dicomweb/studies"])
    names = {p["name"] for p in paths["/dicomweb/studies"]["get"]["parameters"]}
    assert {"PatientName", "StudyDate", "limit", "offset", "includefield", "fuzzymatching"} <= names
    assert "400" in paths["/dicomweb/studies"]["get"]["responses"]
    with urllib.request.urlopen(stack.api + "/swagger", timeout=30) as response:  # noqa: S310
        # Served from the swagger-ui-bundle package (tests/e2e/test_swagger_offline.py renders it)
        assert b'src="swagger/swagger-ui-bundle.js"' in response.read()


def test_wrong_method_is_405_with_a_json_body(stack: Stack) -> None:
    request = urllib.request.Request(stack.api + "/dicomweb/studies", method="DELETE")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310
    assert caught.value.code == 405
    assert json.loads(caught.value.read())["status"] == 405
