"""Every route the query function's resolver answers is declared in template.yaml, and the reverse.

API Gateway only forwards what the template declares (no ``{proxy+}``): a route missing
there is unreachable in the cloud while it works locally; a declared route missing in
the code answers 404 behind a green deployment. The route list comes from the API's own
OpenAPI document, which is generated from the resolver.
"""

from __future__ import annotations

import re

import pytest

from local_cloud.template import load_template, resource


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The handler reads its typed settings at import; no AWS call is made here.
    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("BUCKET_NAME", "b")


def shape(path: str) -> str:
    """The path with its parameters unnamed: API Gateway matches by shape, names may differ."""
    return re.sub(r"{[^}]+}", "{}", path)


def unpartitioned(path: str) -> str:
    """``/dicomweb/partitions/{}/x`` is routed as ``/dicomweb/x`` (query.access.enter_partition)."""
    return re.sub(r"^/(dicomweb|api)/partitions/\{\}(?=/)", r"/\1", path)


def resolver_routes() -> set[tuple[str, str]]:
    import query.handler  # noqa: F401 - registers every route
    from query.routes.docs import openapi_document

    document = openapi_document()
    return {
        (method.upper(), shape(path)) for path, methods in document["paths"].items() for method in methods
    }


def template_routes() -> set[tuple[str, str]]:
    events = resource(load_template(), "QueryFunction")["Events"]
    return {
        (event["Properties"]["Method"].upper(), shape(event["Properties"]["Path"]))
        for event in events.values()
        if event["Type"] == "HttpApi"
    }


def test_every_resolver_route_is_declared_in_the_template() -> None:
    missing = resolver_routes() - template_routes()
    assert not missing, f"routes answered by the code but not declared in template.yaml: {sorted(missing)}"


def test_every_site_scoped_route_is_declared_under_its_partition_too() -> None:
    scoped = {(m, p) for m, p in resolver_routes() if p.startswith(("/dicomweb/", "/api/"))}
    partitioned = {(m, re.sub(r"^/(dicomweb|api)/", r"/\1/partitions/{}/", p)) for m, p in scoped}
    missing = partitioned - template_routes()
    assert not missing, f"routes answered by the code but not declared in template.yaml: {sorted(missing)}"


def test_every_template_route_is_answered_by_the_resolver() -> None:
    extra = {(m, unpartitioned(p)) for m, p in template_routes()} - resolver_routes()
    assert not extra, f"routes declared in template.yaml that the code does not answer: {sorted(extra)}"


def test_the_lists_are_not_trivially_empty() -> None:
    assert len(template_routes()) >= 20
    assert ("GET", "/dicomweb/studies") in resolver_routes()
