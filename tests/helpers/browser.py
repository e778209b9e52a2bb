"""Headless Chromium for page tests (Debian chromium and chromium-driver), set up in one place."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from typing import Any

from tests.conftest import require_tool

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@contextmanager
def chromium(
    logs: Sequence[str] = ("performance",),
    extra_flags: Sequence[str] = (),
    flags: Sequence[str] = CHROMIUM_FLAGS,
) -> Iterator[Any]:
    """A selenium driver of headless Chromium with a throw-away profile, quit on exit.

    ``logs``: Chrome log types kept at level ALL (``"performance"`` = network events, to see
    the headers a page sends; ``"browser"`` = the console). ``extra_flags`` are added after
    ``flags`` (``CHROMIUM_FLAGS`` unless a page needs others, e.g. WebGL). Skips when
    Chromium, chromedriver or selenium is missing (fails when CI=true: ``require_tool``).
    """
    require_tool(
        shutil.which(CHROMIUM) is not None
        and shutil.which(CHROMEDRIVER) is not None
        and find_spec("selenium") is not None,
        "Debian chromium + chromium-driver and the selenium package",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*flags, *extra_flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", dict.fromkeys(logs, "ALL"))
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()
