"""Rendered images, series previews and the /ui page on the local stand-in, the page in headless Chromium."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut

from tests.e2e.conftest import OUTPUT, Stack, wait_for
from tests.helpers.dicom_factory import series_from
from tests.helpers.pipeline import send, study_when_complete

pytestmark = pytest.mark.e2e


@dataclass
class Sent:
    study: str
    ct: list[Dataset]
    mr: list[Dataset]
    no_pixels: Dataset


def marked(ds: Dataset, number: int) -> Dataset:
    """The CT with a white block whose height tells its instance number (so instances differ)."""
    arr = ds.pixel_array.copy()
    arr[: number * 8, :16] = arr.max()
    ds.PixelData = arr.tobytes()
    return ds


@pytest.fixture(scope="module")
def sent(stack: Stack) -> Sent:
    # A 5-instance CT series, a 3-instance MR series and a CT instance without pixel data, one study
    ct = [marked(ds, ds.InstanceNumber) for ds in series_from("CT_small.dcm", 5)]
    study = ct[0].StudyInstanceUID
    mr = series_from("MR_small.dcm", 3, study_uid=study)
    (no_pixels,) = series_from("CT_small.dcm", 1, study_uid=study)
    del no_pixels.PixelData
    for ds in (*ct, *mr, no_pixels):
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "Ványi^Örs"
        ds.PatientID = "UI-E2E-1"
    for ds in mr:
        ds.SeriesNumber = 2
        ds.SeriesDescription = "MR test"
    no_pixels.SeriesNumber = 3
    assert send(stack.dicom_port, [*ct, *mr, no_pixels]) == [0] * 9
    study_when_complete(stack, study, 9)
    return Sent(study, ct, mr, no_pixels)


def fetch(stack: Stack, path: str, accept: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(stack.api + path, headers=headers)  # noqa: S310 (http to loopback)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.headers["content-type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read()


def instance_path(ds: Dataset) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def image(body: bytes) -> Image.Image:
    return Image.open(io.BytesIO(body))


def test_rendered_instance_is_a_png_of_the_instance(stack: Stack, sent: Sent) -> None:
    # GIVEN the third CT instance, read from its zip in S3 by the API
    ds = sent.ct[2]

    # WHEN its rendered form is asked for without a preference
    status, content_type, body = fetch(stack, f"{instance_path(ds)}/rendered")

    # THEN it is a PNG of Columns x Rows with pydicom's own decoding of the sent pixels, through
    # the Modality LUT and, with no window in the header, the frame's full range (PS3.18 8.3.5.1.3)
    assert (status, content_type) == (200, "image/png")
    assert image(body).size == (ds.Columns, ds.Rows)
    values = apply_modality_lut(ds.pixel_array, ds).astype(float)
    expected = (values - values.min()) / (values.max() - values.min()) * 255
    assert np.abs(np.asarray(image(body)).astype(float) - expected).max() <= 0.5 + 1e-9


def test_rendered_media_type_and_window_parameters(stack: Stack, sent: Sent) -> None:
    path = f"{instance_path(sent.ct[0])}/rendered"
    status, content_type, body = fetch(stack, path, accept="image/jpeg")
    assert (status, content_type, image(body).format) == (200, "image/jpeg", "JPEG")
    status, content_type, body = fetch(stack, f"{path}?accept=image/jpeg&quality=50", accept="image/png")
    assert (status, content_type, image(body).format) == (200, "image/jpeg", "JPEG")

    _, _, full = fetch(stack, path)
    status, _, windowed = fetch(stack, f"{path}?window=40,400,linear")
    assert status == 200 and image(windowed).size == (128, 128)
    assert windowed != full
    status, _, scaled = fetch(stack, f"{path}?viewport=256,200")
    assert status == 200 and image(scaled).size == (200, 200)


@pytest.mark.parametrize(
    ("suffix", "accept", "expected"),
    [
        ("?accept=text/html", None, 406),
        ("", "application/dicom", 406),
        ("?window=40", None, 400),
        ("?window=a,b", None, 400),
        ("?quality=0", None, 400),
        ("?viewport=1,2,3,4,5,6", None, 400),
        ("?annotation=patient", None, 400),
    ],
)
def test_bad_rendering_requests_are_4xx_json(
    stack: Stack, sent: Sent, suffix: str, accept: str | None, expected: int
) -> None:
    status, content_type, body = fetch(stack, f"{instance_path(sent.ct[0])}/rendered{suffix}", accept)
    assert (status, content_type) == (expected, "application/json")
    assert b'"error"' in body


def test_unknown_instance_and_non_image_are_4xx_json(stack: Stack, sent: Sent) -> None:
    ct = sent.ct[0]
    unknown = (
        f"/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/1.2.3.4/rendered"
    )
    assert fetch(stack, unknown)[:2] == (404, "application/json")
    assert fetch(stack, "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered")[0] == 404
    assert fetch(stack, "/dicomweb/studies/not-a-uid/series/1.2.4/instances/1.2.5/rendered")[0] == 400
    status, content_type, body = fetch(stack, f"{instance_path(sent.no_pixels)}/rendered")
    assert (status, content_type) == (415, "application/json")
    assert b"no pixel data" in body


def test_series_preview_is_the_middle_instance(stack: Stack, sent: Sent) -> None:
    ct = sent.ct[0]
    preview = f"/api/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/preview.png"

    # WHEN the preview is asked for in full size and small
    status, content_type, body = fetch(stack, preview)
    _, _, middle = fetch(stack, f"{instance_path(sent.ct[2])}/rendered")
    _, _, first = fetch(stack, f"{instance_path(sent.ct[0])}/rendered")
    small_status, _, small = fetch(stack, f"{preview}?size=64")

    # THEN it is instance 3 of 5 (by InstanceNumber), and ?size= shrinks it
    assert (status, content_type) == (200, "image/png")
    assert body == middle != first
    assert small_status == 200 and image(small).size == (64, 64)
    assert fetch(stack, f"{preview}?size=5000")[0] == 400
    assert fetch(stack, f"{preview}?size=abc")[0] == 400
    assert fetch(stack, f"/api/studies/{ct.StudyInstanceUID}/series/1.2.3/preview.png")[0] == 404


def test_ui_page_and_assets_are_served(stack: Stack) -> None:
    status, content_type, body = fetch(stack, "/ui")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert b'<script type="module" src="/ui/app.js">' in body
    for asset, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        status, content_type, _ = fetch(stack, f"/ui/{asset}")
        assert status == 200 and content_type.startswith(kind)
    for missing in ("/ui/nope.js", "/ui/index.html", "/ui/..%2Fhandler.py", "/ui/%2E%2E"):
        assert fetch(stack, missing)[0] == 404, missing


# ---- the page in a real browser --------------------------------------------------------------


def viewer_image(driver: Any) -> dict[str, Any]:
    result: dict[str, Any] = driver.execute_script(
        "const i = document.getElementById('viewer-image');"
        "return {src: i.src, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,"
        " number: i.dataset.instanceNumber, position: document.getElementById('position').textContent};"
    )
    return result


def request_headers(driver: Any) -> dict[str, dict[str, str]]:
    """URL path -> request headers of every request the page made since the last call."""
    seen: dict[str, dict[str, str]] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            seen[urllib.parse.urlsplit(request["url"]).path] = request.get("headers", {})
    return seen


def shown_instance(driver: Any, number: str, not_src: str = "") -> dict[str, Any] | None:
    """The viewer's image once it shows instance ``number``, loaded (and not from ``not_src``)."""
    shown = viewer_image(driver)
    loaded = shown["complete"] and shown["width"] > 0 and shown["src"] != not_src
    return shown if loaded and shown["number"] == number else None


def test_search_open_a_series_and_step_through_it_in_chromium(stack: Stack, sent: Sent, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver = browser
    ct = sent.ct[0]

    # GIVEN the page of the local API
    driver.get(f"{stack.api}/ui")
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), 20, "the page")

    # AND a (development) bearer token pasted into the page
    driver.find_element(By.ID, "token").send_keys("Bearer dev-token-1")
    driver.find_element(By.ID, "save-token").click()
    assert driver.find_element(By.ID, "signin-state").text == "Token set"
    request_headers(driver)

    # WHEN searching by a name prefix without its accent, and the modality
    driver.find_element(By.ID, "patient-name").send_keys("vany")
    Select(driver.find_element(By.ID, "modality")).select_by_visible_text("CT")
    driver.find_element(By.ID, "search-button").click()

    # THEN the study appears with its three series, previews loaded, counts and ingest status shown
    def series_cards() -> list[Any] | None:
        cards = driver.find_elements(By.CSS_SELECTOR, f'[data-study="{sent.study}"] .series')
        statuses = [c.find_element(By.CSS_SELECTOR, ".ingest-status").text for c in cards]
        return cards if len(cards) == 3 and all(s == "indexed" for s in statuses) else None

    cards = wait_for(series_cards, 30, "the study's series in the results")
    ct_card = driver.find_element(By.CSS_SELECTOR, f'[data-series="{ct.SeriesInstanceUID}"]')
    assert ct_card.find_element(By.CSS_SELECTOR, ".modality").text == "CT"
    assert ct_card.find_element(By.CSS_SELECTOR, ".instance-count").text == "5"
    # The zip links come from a second request made after the status is shown
    link = wait_for(lambda: ct_card.find_elements(By.CSS_SELECTOR, ".download a"), 30, "the zip link")[0]
    href = link.get_attribute("href")
    assert f"/{stack.bucket}/incoming/{sent.study}/{ct.SeriesInstanceUID}/" in href
    with urllib.request.urlopen(href, timeout=30) as response:  # noqa: S310 - presigned link to the local S3
        assert response.read(4) == b"PK\x03\x04"  # the series zip itself
    wait_for(
        lambda: driver.execute_script(
            "return [...arguments[0]].every(i => i.complete && i.naturalWidth > 0)",
            [c.find_element(By.CSS_SELECTOR, "img.preview") for c in cards[:2]],
        ),
        30,
        "the CT and MR previews",
    )

    # AND every API request carried the token, image requests included
    sent_headers = request_headers(driver)
    preview = f"/api/studies/{sent.study}/series/{ct.SeriesInstanceUID}/preview.png"
    for path in ("/dicomweb/studies", f"/dicomweb/studies/{sent.study}/series", preview):
        assert sent_headers[path].get("Authorization") == "Bearer dev-token-1", path

    # AND the series without pixel data says so instead of showing a broken picture
    no_picture = f'[data-series="{sent.no_pixels.SeriesInstanceUID}"] .no-preview'
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, no_picture), 30, "the 'no picture' placeholder")
    OUTPUT.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(OUTPUT / "ui-results.png"))

    # WHEN the CT series is opened
    ct_card.find_element(By.CSS_SELECTOR, ".thumb").click()

    # THEN the viewer shows the middle instance at its natural size (Columns x Rows)
    first = wait_for(lambda: shown_instance(driver, "3"), 30, "the first rendered image")
    assert (first["width"], first["height"]) == (ct.Columns, ct.Rows)
    assert first["position"].startswith("3 / 5")
    attributes = driver.find_element(By.ID, "attributes").text
    assert "InstanceNumber 3" in attributes and "Modality CT" in attributes

    # WHEN the right arrow key is pressed
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)

    # THEN the next instance is shown: another image, instance number 4
    second = wait_for(
        lambda: shown_instance(driver, "4", not_src=first["src"]), 30, "the next rendered image"
    )
    assert (second["width"], second["height"]) == (ct.Columns, ct.Rows)
    assert second["position"].startswith("4 / 5")

    # AND the slider steps too (to the first instance)
    driver.execute_script(
        "const s = document.getElementById('slider'); s.value = '1';"
        "s.dispatchEvent(new Event('input', {bubbles: true}));"
    )
    wait_for(lambda: viewer_image(driver)["number"] == "1", 30, "the slider's instance")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: viewer_image(driver)["number"] == "2", 30, "the instance after the slider's")

    screenshot = OUTPUT / "ui-viewer.png"
    assert driver.save_screenshot(str(screenshot))
    assert image(screenshot.read_bytes()).size[0] > 0


def test_token_from_a_hosted_login_redirect_is_kept(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    # WHEN the hosted login (OIDC implicit flow) sends the browser back to /ui with a token
    browser.get(f"{stack.api}/ui#access_token=tok-from-login&token_type=Bearer&expires_in=3600")
    wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), 20, "the page")

    # THEN the page keeps the token, drops it from the address bar, and signs out on request
    assert browser.execute_script("return localStorage.getItem('dicom-api-token')") == "tok-from-login"
    assert browser.current_url == f"{stack.api}/ui"
    assert browser.find_element(By.ID, "signin-state").text == "Token set"
    browser.find_element(By.ID, "signout").click()
    assert browser.execute_script("return localStorage.getItem('dicom-api-token')") is None


def test_search_by_patient_id_and_study_date_range(stack: Stack, sent: Sent, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.api}/ui")
    wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), 20, "the page")

    def search(date_from: str, date_to: str) -> str:
        browser.execute_script(
            "document.getElementById('results').replaceChildren();"
            "document.getElementById('message').textContent = '';"
            "document.getElementById('patient-id').value = 'UI-E2E-1';"
            "document.getElementById('date-from').value = arguments[0];"
            "document.getElementById('date-to').value = arguments[1];",
            date_from,
            date_to,
        )
        browser.find_element(By.ID, "search-button").click()

        def message() -> str | None:
            text = str(browser.find_element(By.ID, "message").text)
            return text if text and text != "Searching…" else None

        return wait_for(message, 30, "the search result message")

    # pydicom's CT and MR files were acquired in 2004
    assert search("2004-01-01", "2004-12-31") == "1 study"
    # The count message can come a moment before the study's card is in the page.
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'[data-study="{sent.study}"]'), 20, "the study card"
    )
    assert search("2005-01-01", "") == "No study matches."
    assert search("", "2003-12-31") == "No study matches."
