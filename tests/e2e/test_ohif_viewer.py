"""The real OHIF v3 viewer in headless Chromium against the local stand-in (another origin: CORS).

Studies go in through STOW-RS; the viewer's study list must show them, and opening a
CT series, an RLE, a JPEG-LS, a JPEG 2000 and a multi-frame JPEG instance must draw
each image: the canvas is compared with pydicom's own decoding of the same file
(correlation of the displayed picture with the pixel values), and scrolling to the
next image must draw that one.
"""

from __future__ import annotations

import base64
import io
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset

from tests.conftest import require_tool
from tests.e2e.conftest import OUTPUT, Stack, wait_for
from tests.helpers.browser import chromium
from tests.helpers.dicom_factory import series_from

pytestmark = pytest.mark.e2e

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=1280,900",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CASES = {
    "ct": ("CT_small.dcm", 3),
    "rle": ("MR_small_RLE.dcm", 1),
    "jls": ("MR_small_jpeg_ls_lossless.dcm", 1),
    "j2k": ("MR_small_jp2klossless.dcm", 1),
    "multiframe": ("examples_ybr_color.dcm", 1),
}


@dataclass
class Studies:
    tag: str
    series: dict[str, list[Dataset]]


def _viewer_up(stack: Stack) -> bool:
    try:
        with urllib.request.urlopen(stack.viewer + "/app-config.js", timeout=5) as reply:  # noqa: S310
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def studies(stack: Stack) -> Studies:
    tag = uuid.uuid4().hex[:8]
    client = DICOMwebClient(stack.api + "/dicomweb")
    series = {}
    for kind, (name, count) in CASES.items():
        instances = series_from(name, count)
        for ds in instances:
            ds.StudyDescription = f"OHIF {kind} {tag}"
            ds.PatientName = f"Ohifviewer^K{kind}"  # no word another test searches for
            ds.PatientID = f"OHIF-{tag}-{kind}"
        client.store_instances(instances)
        series[kind] = instances
    return Studies(tag, series)


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    require_tool(shutil.which("npm") is not None or _viewer_up(stack), "npm (fetches the OHIF viewer)")
    wait_for(lambda: _viewer_up(stack), 120, "the OHIF viewer to be served")
    with chromium(logs=("browser",), flags=FLAGS) as driver:  # WebGL (swiftshader) for cornerstone
        yield driver


def _canvas(driver: Any) -> np.ndarray | None:
    """The first viewport's canvas as an RGB array (cornerstone copies its render into a 2D canvas)."""
    url = driver.execute_script(
        "const c = document.querySelector('canvas.cornerstone-canvas');"
        "return c && c.width > 0 ? c.toDataURL('image/png') : null;"
    )
    if not url:
        return None
    picture = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    return np.asarray(picture)


def _drawn(driver: Any) -> list[np.ndarray]:
    """[canvas] once something is drawn (not a blank canvas), else [] (wait_for wants a truthy value)."""
    canvas = _canvas(driver)
    return [canvas] if canvas is not None and canvas.std() > 5 else []


def _displayed(canvas: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The part of the canvas where a fitted image of rows x columns is drawn, resampled to that size."""
    height, width = canvas.shape[:2]
    scale = min(width / columns, height / rows)
    w, h = round(columns * scale), round(rows * scale)
    left, top = (width - w) // 2, (height - h) // 2
    gray = Image.fromarray(canvas[top : top + h, left : left + w]).convert("L")
    return np.asarray(gray.resize((columns, rows), Image.Resampling.BILINEAR), dtype=float)


def _similarity(canvas: np.ndarray, ds: Dataset, frame: int = 0) -> float:
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames") or 1) > 1:
        pixels = pixels[frame]
    if pixels.ndim == 3:  # colour (pydicom gives RGB): compare the luminance
        pixels = pixels @ np.array([0.299, 0.587, 0.114])
    shown = _displayed(canvas, int(ds.Rows), int(ds.Columns))
    return float(np.corrcoef(shown.ravel(), pixels.astype(float).ravel())[0, 1])


def _open(driver: Any, stack: Stack, ds: Dataset) -> np.ndarray:
    driver.get(f"{stack.viewer}/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}")
    # 120 s: the first JPEG-LS/JPEG 2000 image loads its wasm codec, slow under the CI load run
    try:
        canvas = wait_for(lambda: _drawn(driver), 120, "OHIF to draw the image")[0]
    except AssertionError as exc:  # say why: the viewer's console (codec, HTTP and WebGL errors)
        console = [e["message"][:300] for e in driver.get_log("browser") if e["level"] != "INFO"]
        raise AssertionError(f"{exc}; browser console, last entries: {console[-8:]}") from exc
    time.sleep(1.0)  # let progressive loading finish: take the final picture
    final = _canvas(driver)
    return final if final is not None else canvas


def _scroll_down(driver: Any) -> None:
    """One notch of the mouse wheel over the viewport, as a user's (a real input event)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    viewport = driver.find_element(By.CSS_SELECTOR, "canvas.cornerstone-canvas")
    ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(viewport), 0, 120).perform()


def _save(canvas: np.ndarray, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    Image.fromarray(canvas).save(OUTPUT / f"ohif-{name}.png")


def test_study_list_shows_the_studies(stack: Stack, studies: Studies, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(stack.viewer + "/")
    text = wait_for(
        lambda: (body := browser.find_element(By.TAG_NAME, "body").text) and studies.tag in body and body,
        60,
        "the study list",
    )
    for kind in CASES:
        assert f"OHIF {kind} {studies.tag}" in text


@pytest.mark.parametrize("kind", ["rle", "jls", "j2k"])
def test_compressed_instances_are_drawn_as_pydicom_decodes_them(
    stack: Stack, studies: Studies, browser: Any, kind: str
) -> None:
    ds = studies.series[kind][0]
    canvas = _open(browser, stack, ds)
    _save(canvas, kind)
    assert _similarity(canvas, ds) > 0.9


def test_ct_series_draws_and_scrolls_to_the_next_image(stack: Stack, studies: Studies, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    ct = sorted(studies.series["ct"], key=lambda d: int(d.InstanceNumber))
    first = _open(browser, stack, ct[0])
    _save(first, "ct-1")
    assert _similarity(first, ct[0]) > 0.9
    # WHEN the user scrolls one step down in the viewport
    _scroll_down(browser)
    # THEN the overlay says image 2 of 3 and the canvas shows the second instance
    wait_for(lambda: "2/3" in browser.find_element(By.TAG_NAME, "body").text, 30, "the next image")
    time.sleep(1.0)
    second = _canvas(browser)
    assert second is not None
    _save(second, "ct-2")
    assert _similarity(second, ct[1]) > 0.9


def test_multi_frame_instance_draws_its_frames(stack: Stack, studies: Studies, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    ds = studies.series["multiframe"][0]
    canvas = _open(browser, stack, ds)
    _save(canvas, "multiframe-1")
    assert canvas.shape[0] > 100 and _similarity(canvas, ds, 0) > 0.9
    _scroll_down(browser)
    wait_for(lambda: "2/30" in browser.find_element(By.TAG_NAME, "body").text, 30, "frame 2 of 30")


def test_ui_page_links_studies_to_the_served_viewer(stack: Stack, browser: Any) -> None:
    # The /ui page's viewer base is the OHIF this stand-in serves (i16's link: <base>/viewer?...)
    page = urllib.request.urlopen(stack.api + "/ui", timeout=10).read().decode()  # noqa: S310
    assert f'<meta name="viewer-url" content="{stack.viewer}">' in page


_THUMBNAILS_JS = """
const requests = performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/thumbnail'))
  .map(e => ({url: e.name, status: e.responseStatus || 0}));
const images = [...document.querySelectorAll('img[src^="blob:"]')]
  .filter(img => img.complete && img.naturalWidth > 0)
  .map(img => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sq = 0, n = 0;
    for (let i = 0; i < d.length; i += 4) { const v = d[i]; sum += v; sq += v * v; n++; }
    const mean = sum / n;
    return {width: img.naturalWidth, height: img.naturalHeight, std: Math.sqrt(sq / n - mean * mean)};
  });
return {requests, images};
"""


def test_study_panel_thumbnails_come_from_the_thumbnail_resources(
    stack: Stack, studies: Studies, browser: Any
) -> None:
    # GIVEN the CT study open in the viewer (its study panel lists the series with a thumbnail)
    ds = studies.series["ct"][0]
    browser.get(f"{stack.viewer}/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}")

    def thumbnails() -> dict[str, Any] | None:
        seen: dict[str, Any] = browser.execute_script(_THUMBNAILS_JS)
        return seen if seen["requests"] and seen["images"] else None

    seen = wait_for(thumbnails, 60, "the study panel's thumbnails")
    # THEN they were fetched from the API's /thumbnail resources (PS3.18 10.4.1.2.4) ...
    ours = [r for r in seen["requests"] if r["url"].startswith(stack.api + "/dicomweb/studies/")]
    assert ours, seen["requests"]
    assert any(f"/series/{ds.SeriesInstanceUID}/" in r["url"] for r in ours)
    assert all(r["status"] in (0, 200) for r in ours)  # 0: the browser withheld it (no Timing-Allow-Origin)
    # ... and show a picture, not a blank square
    assert any(i["width"] >= 64 and i["std"] > 5 for i in seen["images"]), seen["images"]
