"""End-to-end: the web page in real headless Chromium, driven by Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-browser.sh``); skips with a
reason when either is missing. The server is uvicorn on a free loopback port in a thread.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlab.models import create_classifier, save_classifier
from cxrlab.serve.app import DISCLAIMER, create_app

pytestmark = pytest.mark.browser

CLASSES = ("COVID", "Normal", "Viral Pneumonia")
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rdb-mini"


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    import uvicorn

    torch.manual_seed(0)
    model = create_classifier("seed-cnn", CLASSES, image_size=64)
    app = create_app(save_classifier(model, tmp_path / "model.ckpt"), device="cpu")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def browser():
    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver", "/usr/lib/chromium/chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium/chromedriver not found; run scripts/install-browser.sh as root")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,1000", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def _xray(tmp_path: Path) -> Path:
    """A real radiograph from rdb-mini when present, else a synthetic one."""
    real = sorted(REAL_DATA.glob("*/*/images/*.png"))[:1] if REAL_DATA.is_dir() else []
    if real:
        return real[0]
    yy, xx = np.mgrid[:128, :128]
    lungs = ((xx - 40) ** 2 / 500 + (yy - 64) ** 2 / 1400 < 1) | (
        (xx - 88) ** 2 / 500 + (yy - 64) ** 2 / 1400 < 1
    )
    img = np.where(lungs, 60, 190).astype(np.uint8)
    path = tmp_path / "synthetic_cxr.png"
    Image.fromarray(img).save(path)
    return path


def test_upload_shows_probabilities_banner_and_classes(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server)
    banner = browser.find_element(By.ID, "banner")
    assert banner.is_displayed() and banner.text == DISCLAIMER
    WebDriverWait(browser, 30).until(lambda d: "classes:" in d.find_element(By.ID, "model").text)

    image = _xray(tmp_path)
    browser.find_element(By.ID, "file").send_keys(str(image))
    WebDriverWait(browser, 60).until(ec.visibility_of_element_located((By.ID, "result")))

    rows = browser.find_elements(By.CSS_SELECTOR, "#bars .bar-row")
    assert [r.get_attribute("data-class") for r in rows] == list(CLASSES)
    values = [float(r.find_element(By.CLASS_NAME, "bar-value").text.rstrip("%")) for r in rows]
    assert sum(values) == pytest.approx(100, abs=0.3)
    labels = [r.find_element(By.CLASS_NAME, "bar-label").text for r in rows]
    assert labels == list(CLASSES)
    predicted = browser.find_element(By.ID, "predicted").text
    assert predicted.startswith("Predicted: ") and image.name in predicted
    assert any(f"Predicted: {c} (" in predicted for c in CLASSES)
    # The CAM overlay or an explicit "CAM unavailable" is shown, never nothing.
    cam_img = browser.find_element(By.ID, "cam-image")
    cam_missing = browser.find_element(By.ID, "cam-missing")
    assert cam_img.is_displayed() or "CAM unavailable" in cam_missing.text
    if cam_img.is_displayed():
        assert browser.execute_script("return arguments[0].naturalWidth", cam_img) == 64
    assert banner.is_displayed()
    assert not browser.find_element(By.ID, "error").is_displayed()

    shot = tmp_path / "serve_page.png"
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 500


def test_bad_file_shows_error_message(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "not_an_image.png"
    bad.write_text("definitely not a PNG")
    browser.get(server)
    browser.find_element(By.ID, "file").send_keys(str(bad))
    error = WebDriverWait(browser, 60).until(ec.visibility_of_element_located((By.ID, "error")))
    assert "not_an_image.png" in error.text and "could not be read" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()
