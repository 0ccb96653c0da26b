"""The overview, funnels and emotion pages in Chromium, against a real ``nexus demo``.

The HTTP tests prove the numbers and the tables; only a browser proves the charts are drawn:
that plotly.js loads from NEXUS itself and runs under the pages' Content Security Policy
without a console error, that the table toggle works, and that the pages fit a phone's
screen. Screenshots go to the test's tmp_path, and to docs/screenshots/ with
``NEXUS_SCREENSHOTS=1`` (how the documentation's pictures are refreshed).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.cli.demo_process import DemoInfo
from tests.web.test_browser import TIMEOUT_MS, _sign_in

pytestmark = pytest.mark.browser

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PAGES = {"overview": "/", "funnels": "/funnels", "emotion": "/emotion"}


@pytest.fixture(scope="module")
def visitor(demo: DemoInfo) -> str:
    """The demo visitor who wrote most in the shop's chat: a trajectory with readings."""
    response = httpx.get(
        f"{demo.url}/v1/events",
        params={"event": "Chat Message", "limit": 200},
        headers={"Authorization": f"Bearer {demo.secret_key}"},
        timeout=10,
    )
    response.raise_for_status()
    writers = Counter(item["anonymousId"] for item in response.json()["items"])
    return writers.most_common(1)[0][0]


class Console:
    """Console errors and uncaught exceptions of a page (a CSP violation is one)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def _open(browser: Browser, demo: DemoInfo, viewport: dict[str, int]) -> tuple[Page, Console]:
    context = browser.new_context(base_url=demo.url, viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console(page)
    _sign_in(page, demo.email, demo.password)
    expect(page.get_by_test_id("workspace-name")).to_be_visible()
    return page, console


def _screenshot(page: Page, name: str, tmp_path: Path, *, docs: bool = True) -> None:
    targets = [tmp_path / f"{name}.png"]
    if docs and os.environ.get("NEXUS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        targets.append(DOCS_SCREENSHOTS / f"{name}.png")
    for target in targets:
        page.screenshot(path=target, full_page=True)
        assert target.stat().st_size > 0


def _wait_for_charts(page: Page) -> int:
    """Every chart on the page drawn by plotly.js; returns how many there are."""
    charts = page.locator("figure.chart")
    count = charts.count()
    assert count > 0
    for index in range(count):
        figure = charts.nth(index)
        expect(figure).to_have_attribute("data-view", "chart")
        expect(figure.locator("svg.main-svg").first).to_be_visible()
    return count


@pytest.mark.parametrize("name", list(PAGES))
def test_charts_draw_without_console_errors_and_toggle_to_tables(
    browser: Browser, demo: DemoInfo, visitor: str, name: str, tmp_path: Path
) -> None:
    page, console = _open(browser, demo, DESKTOP)
    path = PAGES[name] + (f"?visitor={visitor}" if name == "emotion" else "")
    page.goto(path)
    drawn = _wait_for_charts(page)
    if name == "emotion":
        expect(
            page.get_by_test_id("chart-trajectory").locator("svg.main-svg").first
        ).to_be_visible()
        assert drawn == 4  # over time, by step, cohorts, the visitor's trajectory
    if name == "funnels":
        expect(page.get_by_test_id("funnel").first).to_contain_text("Checkout")
    page.wait_for_timeout(300)  # late errors (a style rule plotly adds after drawing)
    assert console.errors == []
    _screenshot(page, name, tmp_path)

    figure = page.locator("figure.chart").first
    table = figure.locator("table")
    toggle = figure.get_by_role("button", name="Table")
    expect(table).to_be_hidden()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(table).to_be_visible()
    expect(figure.locator(".chart-plot")).to_be_hidden()
    back = figure.get_by_role("button", name="Chart")
    expect(back).to_have_attribute("aria-pressed", "true")
    assert table.locator("tbody tr").count() > 0
    back.click()
    expect(figure.locator("svg.main-svg").first).to_be_visible()
    expect(table).to_be_hidden()
    assert console.errors == []
    page.context.close()


def test_pages_fit_a_phone(browser: Browser, demo: DemoInfo, tmp_path: Path) -> None:
    page, console = _open(browser, demo, PHONE)
    for name, path in PAGES.items():
        page.goto(path)
        _wait_for_charts(page)
        width = page.evaluate("window.innerWidth")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, name
        nav = page.get_by_role("navigation", name="Main")
        expect(nav).to_be_visible()
        nav_box = nav.bounding_box()
        main_box = page.locator("main").bounding_box()
        assert nav_box is not None
        assert main_box is not None
        # The sidebar is a bar above the page, as wide as the screen, and scrolls sideways.
        assert nav_box["y"] + nav_box["height"] <= main_box["y"] + 1, name
        assert nav_box["width"] <= width, name
        assert page.evaluate(
            "(() => { const n = document.querySelector('nav.sidebar');"
            " return getComputedStyle(n).overflowX; })()"
        ) in ("auto", "scroll")
        for box in page.locator("svg.main-svg").evaluate_all(
            "svgs => svgs.map(s => s.getBoundingClientRect().right)"
        ):
            assert box <= width + 1, name
        _screenshot(page, f"{name}-phone", tmp_path, docs=False)
    # Everything the sidebar links to stays reachable: the last link scrolls into view.
    keys = page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys")
    keys.click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert console.errors == []
    page.context.close()
