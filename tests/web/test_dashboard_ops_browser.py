"""The experiments, flags and privacy pages in a real browser, against a real ``nexus demo``.

The HTTP tests prove the forms and figures are right on the wire; this proves a person can use
them: the switch button really switches the flag, and the experiment's figure really draws
(plotly.js from the installed package, under the dashboard's content security policy).
With ``NEXUS_SCREENSHOTS=1`` it also saves the experiment and privacy pages, at laptop and
phone widths, into ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.cli.demo_process import DemoInfo

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def _chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def page(browser: Browser, demo: DemoInfo) -> Iterator[Page]:
    context = browser.new_context(base_url=demo.url, viewport=LAPTOP)
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert errors == [], errors  # no script error on any page
    finally:
        context.close()


def _sign_in(page: Page, demo: DemoInfo) -> None:
    page.goto("/login")
    page.locator("#email").fill(demo.email)
    page.locator("#password").fill(demo.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{demo.url}/")


def _screenshot(page: Page, name: str) -> None:
    if os.environ.get("NEXUS_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("laptop", LAPTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(300)  # plotly redraws on resize
        page.screenshot(path=SCREENSHOTS / f"{name}-{label}.png", full_page=True)
    page.set_viewport_size(LAPTOP)


def test_switch_a_flag_off_and_on(page: Page, demo: DemoInfo) -> None:
    _sign_in(page, demo)
    page.goto("/flags")
    row = page.locator('[data-testid="flag-row"][data-flag="calm-checkout"]')
    expect(row.get_by_test_id("flag-state")).to_have_text("on")
    row.get_by_placeholder("why (optional)").fill("browser test")
    row.get_by_role("button", name="Switch off").click()
    expect(page).to_have_url(f"{demo.url}/flags")
    expect(row.get_by_test_id("flag-state")).to_have_text("off")
    served = httpx.get(
        f"{demo.url}/v1/flags/calm-checkout",
        headers={"Authorization": f"Bearer {demo.secret_key}"},
        timeout=10,
    ).json()
    assert served["enabled"] is False
    row.get_by_role("button", name="Switch on").click()
    expect(row.get_by_test_id("flag-state")).to_have_text("on")


def test_experiment_results_draw_and_privacy_reads(page: Page, demo: DemoInfo) -> None:
    _sign_in(page, demo)
    # The demo's simulated visitors fill the experiment within seconds of starting.
    figure = page.locator('[data-testid="chart-effect-orders"]')
    deadline = time.monotonic() + 60
    while True:
        page.goto("/experiments/pricing-test")
        if figure.count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(2000)
    expect(page.get_by_test_id("experiment-name")).to_have_text("Pricing page B")
    expect(figure.locator("svg.main-svg").first).to_be_visible()
    expect(page.get_by_test_id("results-orders")).to_be_visible()
    _screenshot(page, "experiment")

    page.goto("/experiments")
    expect(page.locator('[data-testid="chart-allocation"] svg.main-svg').first).to_be_visible()

    recorded = httpx.post(
        f"{demo.url}/v1/consent",
        json={"visitor_id": "browser-visitor", "purposes": {"analytics": True, "marketing": False}},
        auth=(demo.write_key, ""),
        timeout=10,
    )
    assert recorded.status_code == 200, recorded.text
    page.goto("/privacy")
    expect(page.locator('[data-testid="chart-consent"] svg.main-svg').first).to_be_visible()
    expect(page.get_by_test_id("chain-status")).to_have_attribute("data-ok", "true")
    _screenshot(page, "privacy")

    # At phone width nothing spills sideways out of the page (tables scroll in their box).
    page.set_viewport_size(PHONE)
    for path in ("/experiments/pricing-test", "/flags", "/privacy", "/settings"):
        page.goto(path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, (path, overflow)
