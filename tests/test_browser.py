"""The dashboard in a real browser: Debian's chromium driven by Playwright against `ldam serve`.

The page loads and draws frames that keep changing, the temperature slider changes the
server's parameters and the header of the frames that follow, the target picker switches
units, the compare view shows two panels, every control has a label; a screenshot is saved
to test-artifacts/dashboard.png.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support import PAIR, REPO, START_TIMEOUT_S, free_port, lenet_folder

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("LDAM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"


class Served:
    """`python -m ldam serve` on a free loopback port."""

    def __init__(self, tmp: Path) -> None:
        folder = lenet_folder()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ldam",
                    "serve",
                    str(folder / PAIR[0]),
                    "--checkpoints",
                    str(folder),
                    "--port",
                    str(self.port),
                    "--device",
                    "cpu",
                ],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.base, trust_env=False, timeout=10)

    def state(self) -> dict[str, Any]:
        return self.http.get("/api/state").json()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                state = self.state()
                if state["status"]["worker"] == "running" and state["frame_seq"] >= 0:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready after {START_TIMEOUT_S} s: {self.log.read_text()}")

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (make chromium installs it)")
    server = Served(tmp_path_factory.mktemp("browser"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(served: Served) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(served.base + "/")
        page.wait_for_function("window.ldam && window.ldam.framesShown >= 2", timeout=60_000)
        yield page
        assert errors == [], errors
        browser.close()


def grid_pixels(page: Any) -> str:
    return page.evaluate("document.querySelector('#panels canvas').toDataURL('image/png')")


def test_frames_keep_changing(page: Any) -> None:
    first = grid_pixels(page)
    seq = page.evaluate("window.ldam.header.seq")
    page.wait_for_function(f"window.ldam.header.seq >= {seq + 5}", timeout=30_000)
    assert grid_pixels(page) != first


def test_every_control_has_a_label(page: Any) -> None:
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input, select, button')]
             .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                           && !el.textContent.trim())
             .map(el => el.id || el.outerHTML)"""
    )
    assert unlabelled == []
    assert page.get_by_label("Temperature T").get_attribute("type") == "range"


def test_temperature_slider_changes_the_server_and_the_frames(served: Served, page: Any) -> None:
    page.get_by_label("Temperature T").fill("-0.5")  # log10 scale: T = 10^-0.5
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = served.state()
        if math.isclose(state["params"]["temperature"], 10**-0.5, rel_tol=1e-6):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the server's temperature is still {state['params']['temperature']}")
    assert page.locator("#temperature-value").text_content() == "0.316"
    version = state["version"]
    page.wait_for_function(f"window.ldam.header.version >= {version}", timeout=30_000)
    # The page's URL holds the setting, so a reload or a shared link shows the same view.
    query = parse_qs(urlsplit(page.url).query)
    assert math.isclose(float(query["temperature"][0]), 10**-0.5, rel_tol=1e-6)


def test_target_picker_switches_units(served: Served, page: Any) -> None:
    page.get_by_label("Layout").select_option("chains")
    page.get_by_label("Target layer").select_option("fc1")
    page.get_by_label("Unit α").fill("7")
    page.get_by_label("Unit α").dispatch_event("change")
    page.wait_for_function(
        "window.ldam.header && window.ldam.header.panels[0].target === 'fc1:7'", timeout=30_000
    )
    params = served.state()["params"]
    assert (params["layer"], params["unit"], params["layout"]) == ("fc1", 7, "chains")


def test_space_pauses_and_resumes(served: Served, page: Any) -> None:
    page.locator("h1").click()  # keyboard focus on the page, not in a form field

    def paused_becomes(value: bool) -> None:
        deadline = time.monotonic() + 30
        while served.state()["params"]["paused"] is not value:
            assert time.monotonic() < deadline, f"paused never became {value}"
            time.sleep(0.1)

    page.keyboard.press(" ")
    paused_becomes(True)
    page.wait_for_function("document.getElementById('pause').textContent === 'Resume'")
    page.keyboard.press(" ")
    paused_becomes(False)


def test_compare_view_shows_two_panels(served: Served, page: Any) -> None:
    page.get_by_label("Compare with").select_option(PAIR[1])
    page.wait_for_function(
        "document.querySelectorAll('#panels canvas').length === 2", timeout=60_000
    )
    captions = page.locator("#panels figcaption").all_text_contents()
    assert captions[0].startswith(PAIR[0]) and captions[1].startswith(PAIR[1])
    # For the screenshot, the paper's Figure 5 view: the ten logits, plain against averaged.
    page.get_by_label("Layout").select_option("range")
    page.get_by_label("Target layer").select_option("fc3")
    page.get_by_label("Temperature T").fill("-2")
    page.wait_for_function(
        "window.ldam.header.panels.length === 2 && window.ldam.header.panels[0].target === 'fc3:0-9'",
        timeout=60_000,
    )
    step = page.evaluate("window.ldam.header.step")
    page.wait_for_function(f"window.ldam.header.step >= {step + 150}", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
