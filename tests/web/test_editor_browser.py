"""The page editor in Chromium, against a real ``nexus demo``: the marketer's journey.

The HTTP tests prove the forms round-trip; only a browser proves the live preview: that the
editor's script posts the form into the preview frame as the marketer types, that the frame's
answer is allowed to be framed and styled under its own Content Security Policy, that the
variant tabs work from the keyboard, and that the page works on a phone. With
``NEXUS_SCREENSHOTS=1`` the editor and its preview are saved to docs/screenshots/editor.png.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.cli.demo_process import DemoInfo
from tests.web.test_browser import TIMEOUT_MS, _sign_in

pytestmark = pytest.mark.browser

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
PREVIEW_WITHIN_MS = 5_000


def _open(browser: Browser, demo: DemoInfo, viewport: dict[str, int]) -> tuple[Page, list[str]]:
    # A person's browser, not a headless one: NEXUS scores "HeadlessChrome" as a bot, and funnel
    # reports leave bots out, so the journey's own page view would not count.
    major = browser.version.split(".")[0]
    agent = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )
    context = browser.new_context(base_url=demo.url, viewport=viewport, user_agent=agent)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    _sign_in(page, demo.email, demo.password)
    expect(page.get_by_test_id("user-email")).to_be_visible()
    return page, errors


def test_a_marketer_builds_a_funnel_with_a_variant_and_sees_its_chart(
    browser: Browser, demo: DemoInfo, tmp_path: Path
) -> None:
    page, errors = _open(browser, demo, DESKTOP)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Pages").click()
    expect(page).to_have_url(f"{demo.url}/pages")

    new_funnel = page.get_by_role("form", name="New funnel")
    new_funnel.get_by_label("Name").fill("Garden club")
    new_funnel.get_by_label("Slug (in the address)").fill("garden-club")
    new_funnel.get_by_label("First step's slug").fill("welcome")
    new_funnel.get_by_role("button", name="Create funnel").click()
    expect(page).to_have_url(f"{demo.url}/pages/garden-club/welcome?created=1")
    frame = page.frame_locator('iframe[name="preview"]')
    expect(frame.get_by_role("heading", name="Garden club")).to_be_visible()

    # A headline block, then a second variant of it, keyed as the experiment's variant.
    page.get_by_label("Kind").select_option("headline")
    page.get_by_label("Block id (optional)").fill("promo")
    page.get_by_role("button", name="Add block").click()
    promo = page.get_by_test_id("block").filter(has=page.locator("code", has_text="promo"))
    expect(promo).to_be_visible()
    promo.get_by_label("New variant key").fill("b")
    promo.get_by_role("button", name="Add variant").click()
    promo = page.get_by_test_id("block").filter(has=page.locator("code", has_text="promo"))
    tab_b = promo.get_by_role("tab", name="Variant b")
    expect(tab_b).to_have_attribute("aria-selected", "true")

    # The variant tabs work from the keyboard.
    tab_b.focus()
    page.keyboard.press("ArrowLeft")
    expect(promo.get_by_role("tab", name="Variant a")).to_have_attribute("aria-selected", "true")
    expect(promo.get_by_role("tab", name="Variant a")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(tab_b).to_have_attribute("aria-selected", "true")

    # Typing into variant b shows it in the preview, within a few seconds.
    text = promo.get_by_role("tabpanel").get_by_label("Text")
    history = page.evaluate("history.length")
    text.fill("")
    text.press_sequentially("Grow your own tomatoes", delay=20)
    started = time.monotonic()
    expect(frame.get_by_role("heading", name="Grow your own tomatoes")).to_be_visible(
        timeout=PREVIEW_WITHIN_MS
    )
    print(f"preview updated {time.monotonic() - started:.2f} s after the last key")
    expect(page.get_by_label("Variant", exact=True)).to_have_value("b")
    assert page.locator('iframe[name="preview"]').count() == 1
    # Each preview is a fresh frame: typing leaves no trail in the browser's Back button.
    assert page.evaluate("history.length") == history
    screenshot(page, "editor", tmp_path)

    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("notice")).to_have_text("Saved.")
    expect(page.locator("#f-document_json")).to_contain_text("Grow your own tomatoes")
    assert errors == [], errors  # no CSP violation, no script error in the editor

    # The live page serves one of the variants (no experiment: the first, to everyone).
    live = page.get_by_test_id("live-link").get_attribute("href")
    assert live is not None
    page.goto(live)
    expect(page.get_by_role("heading", name="Your headline")).to_be_visible()
    expect(page.locator("[data-nexus-block=promo]")).to_have_attribute("data-nexus-variant", "a")
    with page.expect_response(lambda r: r.url.endswith("/v1/batch")) as sent:
        page.locator("[data-nexus-consent-banner]").get_by_role("button", name="Accept all").click()
    assert sent.value.ok, sent.value.status

    # The funnel report: the visit above entered it, so its chart is drawn.
    section = page.get_by_test_id("funnel").filter(has_text="Garden club")
    deadline = time.monotonic() + 30
    while True:
        page.goto("/funnels")
        expect(section).to_be_visible()
        if section.locator("svg.main-svg").count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(1_000)
    expect(section.locator("svg.main-svg").first).to_be_visible()


def test_the_editor_fits_a_phone_with_the_preview_below(
    browser: Browser, demo: DemoInfo, tmp_path: Path
) -> None:
    page, errors = _open(browser, demo, PHONE)
    page.goto("/pages/spring-sale/landing")
    fields = page.locator("#fields").bounding_box()
    preview = page.locator("iframe[name=preview]").bounding_box()
    assert fields is not None
    assert preview is not None
    assert preview["y"] >= fields["y"] + fields["height"]
    assert preview["width"] <= PHONE["width"]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"the page is {width}px wide on a {PHONE['width']}px phone"
    frame = page.frame_locator('iframe[name="preview"]')
    expect(frame.locator("[data-nexus-block=headline]")).to_be_visible()

    # The preview shows a tone's copy when asked, from the saved adaptations.
    page.get_by_label("Tone or adaptation").select_option("a:calm")
    expect(frame.get_by_text("Take your time: the spring sale runs all month")).to_be_visible(
        timeout=PREVIEW_WITHIN_MS
    )
    screenshot(page, "editor-phone", tmp_path, docs=False)
    assert errors == [], errors


def screenshot(page: Page, name: str, tmp_path: Path, *, docs: bool = True) -> None:
    targets = [tmp_path / f"{name}.png"]
    if docs and os.environ.get("NEXUS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        targets.append(DOCS_SCREENSHOTS / f"{name}.png")
    for target in targets:
        page.screenshot(path=target, full_page=False)
        assert target.stat().st_size > 0
