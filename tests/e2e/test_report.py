"""The batch report (report.html) in headless Chromium: every image shown, sorted by score, filter by verdict."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api")

from manipseg import registry  # noqa: E402
from manipseg.calibration import calibrate_scores  # noqa: E402
from manipseg.cli import main  # noqa: E402
from manipseg.contract import Detector, Prediction  # noqa: E402
from manipseg.io import save_png  # noqa: E402

CHROMIUM = os.environ.get("MANIPSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no system Chromium found (install it with scripts/install_browser.sh, or set MANIPSEG_CHROMIUM)",
                allow_module_level=True)


class Bright(Detector):
    name = "bright-test"
    min_region = 0.0

    def _predict(self, image):
        h, w = image.shape[:2]
        prob = np.zeros((h, w), np.float32)
        prob[: h // 2, : w // 2] = image.mean() / 255.0
        return Prediction(prob, float(image.mean() / 255.0))


@pytest.fixture
def batch(tmp_path):
    registry.register("bright-test", "test")(Bright)
    try:
        src = tmp_path / "in"
        src.mkdir()
        for i in range(7):
            save_png(src / f"p{i}.png", np.full((48, 64, 3), 30 * i + 10, np.uint8))
        (src / "broken.png").write_bytes(b"not a png")
        cal = calibrate_scores("bright-test", np.linspace(0, 0.6, 40), rate=0.05, inconclusive_rate=0.25)
        cal.save(tmp_path / "cal.json")
        out = tmp_path / "out"
        assert main(["predict", str(src), "--model", "bright-test", "--calibration", str(tmp_path / "cal.json"),
                     "--out", str(out), "--no-progress"]) == 1  # one input failed
        yield out
    finally:
        registry.DETECTORS.remove("bright-test")


def test_index_is_queryable_and_complete(batch):
    con = sqlite3.connect(batch / "index.sqlite")
    rows = con.execute("select input, score, verdict, sha256, overlay, error from results order by score desc").fetchall()
    assert len(rows) == 8
    ok = [r for r in rows if r[5] is None]
    assert len(ok) == 7 and all(len(r[3]) == 64 and (batch / r[4]).is_file() for r in ok)
    assert [r[1] for r in ok] == sorted((r[1] for r in ok), reverse=True)
    assert {r[2] for r in ok} >= {"likely manipulated", "no clear sign"}
    failed = [r for r in rows if r[5]]
    assert len(failed) == 1 and "broken.png" in failed[0][5]
    jsonl = [json.loads(x) for x in (batch / "predictions.jsonl").read_text().splitlines()]
    assert len(jsonl) == 8


def test_report_opens_offline_and_shows_every_image(batch):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((batch / "report.html").as_uri())
        figures = page.locator("figure")
        assert figures.count() == 8
        imgs = page.locator("figure img")
        assert imgs.count() == 7
        page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        scores = [float(s) for s in page.eval_on_selector_all("figure[data-score]", "els => els.map(e => e.dataset.score)")]
        assert scores == sorted(scores, reverse=True)
        # filter: hide "no clear sign"
        n_clear = page.locator('figure[data-verdict="no clear sign"]').count()
        assert n_clear >= 1
        page.locator('.filters input[value="no clear sign"]').uncheck()
        assert page.locator("figure:not([hidden])").count() == 8 - n_clear
        assert page.locator("#shown").inner_text() == str(8 - n_clear)
        page.screenshot(path=str(batch / "report.png"), full_page=True)
        browser.close()
    assert not errors
