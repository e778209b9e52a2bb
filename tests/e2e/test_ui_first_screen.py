"""The /ui page as a new user meets it, in headless Chromium: recent studies on open, one search's
cards at a time, and a viewer link per study."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest

from tests.e2e.conftest import Stack, wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.pipeline import send, study_when_complete

pytestmark = pytest.mark.e2e
PATIENT_ID = "UI-FIRST-SCREEN"


@pytest.fixture(scope="module")
def newest_study(stack: Stack) -> str:
    # A study dated after every other one in the stack: it is the first of the "recent" list
    instances = series_from("CT_small.dcm", 2)
    for ds in instances:
        ds.PatientID = PATIENT_ID
        ds.StudyDate = "20991231"
    assert send(stack.dicom_port, instances) == [0, 0]
    study = str(instances[0].StudyInstanceUID)
    study_when_complete(stack, study, 2)
    return study


def page_state(driver: Any) -> dict[str, Any]:
    result: dict[str, Any] = driver.execute_script(
        "const r = document.getElementById('results');"
        "return {state: r.dataset.state, message: document.getElementById('message').textContent,"
        " studies: [...r.querySelectorAll('article.study')].map(a => a.dataset.study),"
        " dates: [...r.querySelectorAll('article.study .meta')].map(m => m.textContent.slice(0, 10))};"
    )
    return result


def open_page(stack: Stack, driver: Any) -> None:
    driver.get(f"{stack.api}/ui")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), 20, "the page")


def test_recent_studies_are_listed_on_open_with_a_viewer_link(
    stack: Stack,
    newest_study: str,
    browser: Any,
) -> None:
    # WHEN the page is opened, nothing clicked
    open_page(stack, browser)

    # THEN the most recent studies are listed (newest first within a site: the API's order)
    shown = wait_for(lambda: (s := page_state(browser))["state"] == "done" and s, 60, "the recent studies")
    assert newest_study in shown["studies"]
    assert "most recent" in shown["message"]
    assert shown["dates"][shown["studies"].index(newest_study)] == "2099-12-31"

    # AND each study links to the OHIF viewer under the viewer base the page was given
    base = browser.execute_script("return document.querySelector('meta[name=viewer-url]').content")
    assert base.startswith("http://127.0.0.1:")
    link = browser.execute_script(
        "return document.querySelector(`article[data-study='${arguments[0]}'] a.open-viewer`).href",
        newest_study,
    )
    parsed = urllib.parse.urlsplit(link)
    assert f"{parsed.scheme}://{parsed.netloc}{parsed.path}" == f"{base.rstrip('/')}/viewer"
    assert urllib.parse.parse_qs(parsed.query) == {"StudyInstanceUIDs": [newest_study]}


def test_a_second_search_replaces_the_first_and_never_mixes_cards(
    stack: Stack,
    newest_study: str,
    browser: Any,
) -> None:
    # GIVEN the page, its first list shown
    open_page(stack, browser)
    wait_for(lambda: page_state(browser)["state"] == "done", 60, "the recent studies")

    # WHEN a search for every study starts and, while it loads, a narrower one
    browser.execute_script(
        "document.getElementById('search-button').click();"
        "document.getElementById('patient-id').value = arguments[0];"
        "document.getElementById('search-button').click();",
        PATIENT_ID,
    )

    # THEN only the second search's study is shown, once, under its own count ...
    shown = wait_for(lambda: (s := page_state(browser))["state"] == "done" and s, 60, "the second search")
    assert shown["studies"] == [newest_study]
    assert shown["message"] == "1 study"

    # ... and it stays so a moment later: the first search's late answers were dropped, not appended
    time.sleep(2)
    assert page_state(browser)["studies"] == [newest_study]
