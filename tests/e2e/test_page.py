"""End-to-end: the web page in headless Chromium (Debian's ``chromium``, driven by Playwright).

Run ``scripts/install_browser.sh`` first; the tests skip (with the reason) only when no system Chromium
is installed. Screenshots are saved in each test's ``tmp_path`` and their paths printed.
"""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

import serve_support as sup  # noqa: E402
from manipseg.serve.app import create_app  # noqa: E402
from manipseg.serve.inference import Settings  # noqa: E402

CHROMIUM = os.environ.get("MANIPSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no system Chromium found (install it with scripts/install_browser.sh, or set MANIPSEG_CHROMIUM)",
                allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server():
    app = create_app(Settings(model="noi", max_bytes=5_000_000))
    with sup.live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # console errors (CSP violations, script failures), except the log line for an expected 4xx answer
    pg.on("console", lambda msg: errors.append(msg.text)
          if msg.type == "error" and "the server responded with a status of 4" not in msg.text else None)
    pg.goto(server + "/")
    pg.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
    yield pg
    context.close()
    assert not errors, errors  # no JavaScript error and no CSP violation


def shot(pg, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    pg.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def data_url_to_array(url: str) -> np.ndarray:
    raw = base64.b64decode(url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)


def write_forgery(tmp_path: Path) -> tuple[Path, np.ndarray]:
    image, mask = sup.make_forgery()
    path = tmp_path / "forged-astronaut.png"
    path.write_bytes(sup.encode(image))
    return path, mask


def test_forgery_shows_overlay_score_and_downloads(page, tmp_path):
    path, mask = write_forgery(tmp_path)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)

    assert page.is_hidden("#error")
    score = page.text_content("#score")
    assert score and 0.0 <= float(score) <= 1.0 and len(score) == 4
    assert page.text_content("#level") in ("low", "medium", "high")
    assert "proof" in page.text_content("#reading") + page.text_content(".caveat")
    assert page.text_content("#used-model") == "noi"
    assert page.text_content("#size") == "512 × 512 px"
    # the photo and the heatmap overlay are decoded and displayed by the browser
    page.wait_for_function("() => document.getElementById('overlay').complete && document.getElementById('photo').complete")
    assert page.eval_on_selector("#photo", "e => e.naturalWidth") == 512
    assert page.eval_on_selector("#overlay", "e => e.naturalWidth") == 512
    assert page.eval_on_selector("#mask", "e => e.naturalWidth") == 512
    assert page.is_visible("#overlay") and page.is_visible("#mask") and page.is_visible("#opacity")
    # the opacity slider fades the heatmap overlay in and out over the photo
    page.fill("#opacity", "25")
    assert page.eval_on_selector("#overlay", "e => e.style.opacity") == "0.25"
    page.fill("#opacity", "100")
    # downloads carry the PNGs under the photo's name; the map is higher on the pasted patch
    assert page.get_attribute("#dl-mask", "download") == "forged-astronaut.mask.png"
    prob = data_url_to_array(page.get_attribute("#dl-prob", "href"))
    assert prob.dtype == np.uint16 and prob.shape == (512, 512)
    assert prob[mask].mean() > 1.5 * prob[~mask].mean()
    overlay = data_url_to_array(page.get_attribute("#dl-overlay", "href"))
    assert overlay.shape == (512, 512, 3)
    shot(page, tmp_path, "forgery.png")


def test_drop_a_file_on_the_page(page, tmp_path):
    image, _ = sup.make_forgery()
    payload = base64.b64encode(sup.encode(image, ".jpg")).decode("ascii")
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            return dt;
        }""", payload)
    page.dispatch_event("#drop", "dragover", {"dataTransfer": transfer})
    assert "over" in page.get_attribute("#drop", "class")
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert "dropped.jpg" in page.text_content("#status")
    assert page.get_attribute("#dl-overlay", "download") == "dropped.overlay.png"


def test_tiff_the_browser_cannot_show_falls_back_to_the_overlay(page, tmp_path):
    image, _ = sup.make_forgery()
    path = tmp_path / "scan.tif"
    path.write_bytes(sup.encode(image, ".tiff"))
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_function("() => document.getElementById('photo').src.startsWith('data:image/png')")
    assert page.eval_on_selector("#photo", "e => e.naturalWidth") == 512
    assert page.is_hidden("#overlay") and page.is_hidden("#opacity")


def test_detector_picker_uses_the_chosen_model(page, tmp_path):
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert "noi" in options and "test-square" in options
    assert page.eval_on_selector("#model", "e => e.value") == "noi"
    page.select_option("#model", "test-square")
    assert "central quarter" in page.text_content("#model-summary")
    path, _ = write_forgery(tmp_path)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.text_content("#used-model") == "test-square"
    assert page.text_content("#score") == "0.75"


def test_corrupt_file_shows_a_clear_error(page, tmp_path):
    image, _ = sup.make_forgery()
    jpeg = sup.encode(image, ".jpg")
    path = tmp_path / "broken.jpg"
    path.write_bytes(jpeg[: len(jpeg) // 3])
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.text_content("#error")
    assert "This file was not analysed." in text
    assert "broken.jpg" in text and "truncated or corrupt" in text
    assert page.is_hidden("#result")
    shot(page, tmp_path, "corrupt.png")


def test_not_an_image_and_too_large_are_explained(page, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file, not a photo\n" * 20)
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "whatever its name says" in page.text_content("#error-message")

    big = tmp_path / "huge.png"  # refused by the page before uploading (limit from /v1/info)
    big.write_bytes(sup.encode(np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)))
    assert big.stat().st_size > 5_000_000
    page.set_input_files("#file", str(big))
    page.wait_for_function("() => document.getElementById('error-message').textContent.includes('huge.png')")
    assert "at most 4.8 MB" in page.text_content("#error-message")


def test_phone_width_layout(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    pg = context.new_page()
    pg.goto(server + "/")
    pg.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
    path, _ = write_forgery(tmp_path)
    pg.set_input_files("#file", str(path))
    pg.wait_for_selector("#result:not([hidden])", timeout=60_000)
    overflow = pg.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"page is {overflow}px wider than the phone screen"
    photo = pg.eval_on_selector("#photo", "e => e.getBoundingClientRect().width")
    assert 300 <= photo <= 390
    shot(pg, tmp_path, "phone.png")
    context.close()
