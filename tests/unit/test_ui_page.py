"""query.routes.ui: the page's files and its login URL (no network)."""

from __future__ import annotations

import re

import pytest
from query.routes import ui


def test_only_the_shipped_assets_are_served() -> None:
    # The page's script and style sheet, nothing else (index.html only as /ui)
    assert ui.assets() == {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
    assert (ui.STATIC / "index.html").is_file()


def test_page_without_login_url_asks_for_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UI_LOGIN_URL", raising=False)
    page = ui.page()
    assert '<meta name="login-url" content="">' in page
    assert 'id="token"' in page and "{{" not in page


def test_login_url_is_put_in_the_page_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    url = 'https://auth.example.org/login?client_id=abc&response_type=token&redirect_uri=x"><script>'
    monkeypatch.setenv("UI_LOGIN_URL", url)
    meta = re.search(r'<meta name="login-url" content="([^"]*)">', ui.page())
    assert meta is not None
    assert meta.group(1) == (
        "https://auth.example.org/login?client_id=abc&amp;response_type=token"
        "&amp;redirect_uri=x&quot;&gt;&lt;script&gt;"
    )


def test_page_loads_only_its_own_files() -> None:
    page = (ui.STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/ui/") or s == "data:," for s in sources)
    assert "script-src 'self'" in ui.SECURITY_HEADERS["Content-Security-Policy"]


def test_every_ui_and_rendering_route_is_declared_in_the_template(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the routes of the ui and rendered modules (the latter reads settings at import)
    import importlib

    from local_cloud.template import load_template

    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("BUCKET_NAME", "b")
    rendered = importlib.import_module("query.routes.rendered")
    routes = {
        (method, re.sub(r"<\w+>", "{}", key[0]))
        for router in (ui.router, rendered.router)
        for key in router._routes
        for method in key[1]
    }

    # THEN each one is an HttpApi event of the query function (path parameter names aside)
    events = load_template()["Resources"]["QueryFunction"]["Properties"]["Events"].values()
    declared = {
        (e["Properties"]["Method"], re.sub(r"\{\w+\}", "{}", e["Properties"]["Path"]))
        for e in events
        if e["Type"] == "HttpApi"
    }
    assert len(routes) == 4
    assert routes <= declared


def test_viewer_base_is_put_in_the_page_with_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UI_VIEWER_URL", raising=False)
    assert f'<meta name="viewer-url" content="{ui.DEFAULT_VIEWER_URL}">' in ui.page()
    monkeypatch.setenv("UI_VIEWER_URL", 'http://viewer.example.org/ohif?a=1&b="x"')
    escaped = "http://viewer.example.org/ohif?a=1&amp;b=&quot;x&quot;"
    assert f'<meta name="viewer-url" content="{escaped}">' in ui.page()
    monkeypatch.setenv("UI_VIEWER_URL", "")
    assert '<meta name="viewer-url" content="">' in ui.page()  # no link
