"""The web page in a real browser: Debian's Chromium driven by Playwright against a real `fakeface serve`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _need(ok: bool, what: str):
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{what} is missing: `make test` installs it")
        pytest.skip(f"{what} is not installed (make test installs it)")


@pytest.fixture(scope="module")
def server(tiny_run):
    try:
        import playwright  # noqa: F401
    except ImportError:
        _need(False, "the playwright package")
    _need(Path(CHROMIUM).exists(), "Debian's chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fakeface", "serve", "--checkpoint", str(tiny_run[1]),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, "server died"
            time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server)
        yield page
        browser.close()


def test_upload_a_real_face_shows_a_verdict(page, sample_root, tmp_path):
    face = next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg"))
    page.set_input_files("#file", str(face))
    page.wait_for_selector("#result", state="visible", timeout=60_000)
    verdict = page.inner_text("#verdict")
    assert verdict in ("Likely a real photo", "Likely generated (fake)")
    assert "P(fake) =" in page.inner_text("#detail")
    assert page.get_attribute("#verdict", "class") in ("real", "fake")
    assert "inception_resnet_v1" in page.inner_text("#model")
    page.screenshot(path=str(tmp_path / "verdict.png"), full_page=True)
    assert (tmp_path / "verdict.png").stat().st_size > 10_000


def test_heatmap_toggle(page, tmp_path):
    assert page.is_hidden("#heatmaps")
    page.check("#heat")  # asks the server again, with explain=true
    page.wait_for_selector("#heatmaps img", timeout=60_000)
    src = page.get_attribute("#heatmaps img", "src")
    assert src.startswith("data:image/png;base64,") and len(src) > 1000
    page.screenshot(path=str(tmp_path / "heatmap.png"), full_page=True)
    page.uncheck("#heat")
    assert page.is_hidden("#heatmaps")


def test_a_corrupt_file_gets_a_clear_message(page, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 20)
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error", timeout=60_000)
    message = page.inner_text("#status")
    assert message.startswith("Sorry") and "corrupt" in message
    assert not page.is_visible("#result")
    page.screenshot(path=str(tmp_path / "error.png"))


def test_a_late_answer_to_an_earlier_upload_is_not_shown(page, sample_root, tmp_path):
    """Two uploads in quick succession: whatever order the answers come in, the page shows the last upload's."""
    held = []

    def hold_the_first(route):
        if held:
            route.continue_()
        else:
            held.append(route)  # answered only after the second upload's answer is on the page

    face = next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg"))
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    page.route("**/v1/predict*", hold_the_first)
    try:
        page.set_input_files("#file", str(face))
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Analysing')")
        assert page.evaluate("document.getElementById('file').value") == ""  # choosing it again is a change
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status.error", timeout=60_000)
        with page.expect_response("**/v1/predict*") as late:
            held[0].continue_()
        assert late.value.status == 200
        page.wait_for_timeout(500)  # time for the page to (wrongly) show it
        assert page.is_visible("#status.error") and not page.is_visible("#result")
    finally:
        page.unroute("**/v1/predict*")


def test_a_fresh_load_logs_no_error_and_states_the_servers_upload_limit(page, server):
    context = page.context.browser.new_context()
    fresh, errors = context.new_page(), []
    fresh.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    fresh.goto(server)
    fresh.wait_for_function("document.getElementById('limit').textContent !== ''")
    assert fresh.inner_text("#limit") == ", up to 10 MB" and errors == []  # no favicon 404 either
    context.close()


def test_phone_width_has_no_sideways_scroll(page):
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1100, "height": 900})


def test_a_blank_image_with_faces_searched_says_no_face_found(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (400, 300), (245, 245, 240)).save(tmp_path / "blank.png")
    page.check("#faces")
    try:
        page.set_input_files("#file", str(tmp_path / "blank.png"))
        page.wait_for_selector("#verdict.no_face", timeout=60_000)
        assert page.inner_text("#verdict") == "No face found"
        assert "P(fake)" not in page.inner_text("#detail") and "%" not in page.inner_text("#detail")
        assert page.is_hidden(".meter")
    finally:
        page.uncheck("#faces")


def test_a_synthetic_or_provisional_model_is_announced(page, server):
    import json

    context = page.context.browser.new_context()
    fresh = context.new_page()

    def synthetic(route):
        info = json.loads(route.fetch().text())
        info.update(data_kind="synthetic", release={"name": "x", "version": "1", "provisional": True,
                                                    "note": "a stand-in"})
        route.fulfill(json=info)
    fresh.goto(server)
    fresh.wait_for_function("document.getElementById('limit').textContent !== ''")  # /v1/model was read
    assert fresh.is_hidden("#synthetic") and fresh.is_hidden("#release-note")  # the real model says neither
    fresh.route("**/v1/model", synthetic)
    fresh.reload()
    fresh.wait_for_selector("#synthetic", state="visible", timeout=30_000)
    assert "synthetic data: not a face detector" in fresh.inner_text("#synthetic").lower()
    assert "a stand-in" in fresh.inner_text("#release-note")
    context.close()
