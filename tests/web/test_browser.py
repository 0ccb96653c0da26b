"""The dashboard in a real browser, against a real ``nexus demo`` process.

The HTTP-level tests prove the forms and cookies are right on the wire; only a browser proves
a person can actually use them: that the cookie attributes are accepted by Chromium on plain
http://127.0.0.1, that the sign-in button submits the form, that the sidebar links lead
somewhere, and that signing out really ends the session. Chromium is Debian's (``chromium``
on PATH), never a Playwright download; CI installs it, so there its absence is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.cli.demo_process import DemoInfo

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000


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
    """A fresh browser context (no cookies) per test, so no test signs in for another."""
    context = browser.new_context(base_url=demo.url)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def _sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_browse_and_sign_out(page: Page, demo: DemoInfo, tmp_path: Path) -> None:
    """The whole first visit: the printed login reaches the dashboard of the demo workspace,
    the API keys page lists the public write key, and signing out locks the dashboard again."""
    _sign_in(page, demo.email, demo.password)

    expect(page).to_have_url(f"{demo.url}/")
    expect(page.get_by_test_id("workspace-name")).to_have_text("Demo Shop")
    expect(page.get_by_test_id("write-key")).to_have_text(demo.write_key)
    expect(page.get_by_test_id("user-email")).to_have_text("demo@nexus.local")
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"dashboard screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0

    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page).to_have_url(f"{demo.url}/keys")
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    public_rows = page.locator("tbody tr").filter(
        has=page.get_by_role("cell", name="public", exact=True)
    )
    expect(public_rows).to_have_count(1)
    expect(public_rows).to_contain_text(demo.write_key)

    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(f"{demo.url}/login")
    expect(page.locator("#email")).to_be_visible()

    page.goto("/")
    expect(page).to_have_url(re.compile(re.escape(f"{demo.url}/login") + r"(\?.*)?$"))
    expect(page.get_by_test_id("workspace-name")).to_have_count(0)


def test_wrong_password_shows_an_error(page: Page, demo: DemoInfo) -> None:
    """A refused sign-in must say so on the page, and must not reach the dashboard."""
    _sign_in(page, demo.email, demo.password + "-wrong")

    expect(page.get_by_test_id("login-error")).to_be_visible()
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong e-mail or password.")
    expect(page).to_have_url(f"{demo.url}/login")
    expect(page.get_by_test_id("workspace-name")).to_have_count(0)


def test_funnel_and_live_events_pages(page: Page, demo: DemoInfo) -> None:
    """The demo's seeded funnel shows its narrowing steps, and the live events page gets new
    rows over server-sent events while it is open (the demo's live traffic sends them)."""
    _sign_in(page, demo.email, demo.password)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Funnels").click()
    expect(page).to_have_url(f"{demo.url}/funnels")
    funnel = page.get_by_test_id("funnel").first
    expect(funnel).to_contain_text("Checkout")
    counts = [int(c) for c in funnel.get_by_test_id("step-count").all_inner_texts()]
    assert len(counts) == 4
    assert counts[0] > 0
    assert counts == sorted(counts, reverse=True)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Live events").click()
    expect(page.get_by_test_id("live-status")).to_have_text("(live)")
    # A row that arrived through the stream carries the message id the script set on it.
    expect(page.locator("#live-events tr[data-message-id]").first).to_be_attached(timeout=20_000)
