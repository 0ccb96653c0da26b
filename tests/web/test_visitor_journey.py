"""A visitor's journey through a hosted funnel in a real browser, against a real ``nexus demo``.

The visitor loads the demo's hosted landing page, answers the consent banner, writes a
frustrated chat message, and the page adapts in place (calmer palette, the help block, the
tone's copy) -- the latency from the message's submit to the adapted page is measured in the
page itself. Their page views, the ``$adaptation`` event and their order arrive through the
SDK, and the funnel report counts their conversion. Chromium is Debian's, never a download.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from benchmarks.bench_adaptation import MEASURE, PERSON_UA
from benchmarks.bench_adaptation import MESSAGE as FRUSTRATED
from playwright.sync_api import Browser, Page, expect

from nexus.pages import samples
from tests.cli.demo_process import DemoInfo
from tests.web.test_browser import TIMEOUT_MS

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"


@pytest.fixture
def page(browser: Browser, demo: DemoInfo) -> Iterator[Page]:
    context = browser.new_context(
        base_url=demo.url, viewport={"width": 1280, "height": 900}, user_agent=PERSON_UA
    )
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    try:
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        yield tab
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


@pytest.fixture(autouse=True)
def _demo_adaptations(demo: DemoInfo) -> None:
    """The demo's own adaptations, whatever other browser tests did with the shared demo."""
    with _api(demo) as api:
        for existing in api.get("/v1/adaptations", params={"limit": 100}).json()["items"]:
            assert api.delete(f"/v1/adaptations/{existing['key']}").status_code == 204
        for adaptation in samples.demo_adaptations():
            created = api.post("/v1/adaptations", json=adaptation)
            assert created.status_code == 201, created.text


def _api(demo: DemoInfo) -> httpx.Client:
    return httpx.Client(
        base_url=demo.url,
        headers={"Authorization": f"Bearer {demo.secret_key}"},
        timeout=10.0,
    )


def _eventually(check: Callable[[], Any], *, seconds: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy (events are stored asynchronously)."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {check.__doc__ or check}")
        time.sleep(0.25)


def _events(api: httpx.Client, visitor: str, event: str) -> list[dict[str, Any]]:
    response = api.get("/v1/events", params={"event": event, "person": visitor, "limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _shot(page: Page, name: str, tmp_path: Path) -> None:
    target = SCREENSHOTS if os.environ.get("NEXUS_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=target / name, full_page=True)


def test_a_frustrated_visitor_gets_a_calmer_page_and_converts(
    page: Page, demo: DemoInfo, tmp_path: Path
) -> None:
    landing = f"/f/{demo.workspace_id}/spring-sale/landing"
    page.goto(landing)
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    visitor = next(c["value"] for c in page.context.cookies() if c["name"] == "nexus_aid")
    help_block = page.locator('[data-nexus-block="help"]')
    expect(help_block).to_be_hidden()

    banner = page.locator("[data-nexus-consent-banner]")
    expect(banner).to_be_visible()
    _shot(page, "hosted-consent.png", tmp_path)
    banner.get_by_role("button", name="Accept all").click()
    expect(banner).to_be_hidden()

    api = _api(demo)
    _eventually(lambda: _events(api, visitor, "$page"))
    page.evaluate(MEASURE)
    accent_before = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--nexus-accent').trim()"
    )
    chat = page.locator('[data-nexus-block="chat"]')
    chat.get_by_role("textbox").fill(FRUSTRATED)
    chat.get_by_role("button", name="Send").click()
    page.wait_for_function("() => window.__nx.t1 !== null", timeout=10_000)
    latency_ms = page.evaluate("() => window.__nx.t1 - window.__nx.t0")
    print(f"adaptation latency: {latency_ms:.0f} ms")

    tone = page.evaluate("document.documentElement.dataset.nexusTone")
    assert tone in ("calm", "reassuring")
    expect(help_block).to_be_visible()
    accent_after = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--nexus-accent').trim()"
    )
    assert accent_after != accent_before
    expect(chat.locator("[data-nexus-chat-log]")).to_contain_text(FRUSTRATED)
    page.wait_for_timeout(800)  # the palette fades in over 0.6 s (--nexus-transition)
    _shot(page, "hosted-adapted.png", tmp_path)

    adaptation = _eventually(lambda: _events(api, visitor, "$adaptation"))[0]
    assert adaptation["properties"]["adaptation"] in ("calm", "reassuring")
    assert adaptation["properties"]["tone"] == tone
    chats = _eventually(lambda: _events(api, visitor, "Chat Message"))
    assert chats[0]["properties"]["text"] == FRUSTRATED  # consent to emotion analysis given

    # On through the funnel: the next page is rendered adapted by the server already.
    page.locator('[data-nexus-block="next"] a').click()
    expect(page).to_have_url(f"{demo.url}/f/{demo.workspace_id}/spring-sale/offer")
    assert page.evaluate("document.documentElement.dataset.nexusTone") in ("calm", "reassuring")
    expect(page.locator('[data-nexus-block="help"]')).to_be_visible()
    page.locator('[data-nexus-block="next"] a').click()
    expect(page).to_have_url(f"{demo.url}/f/{demo.workspace_id}/spring-sale/checkout")
    form = page.locator('[data-nexus-block="order"] form')
    form.get_by_label("Full name").fill("Ada Visitor")
    form.get_by_label("E-mail").fill("ada@example.com")
    form.get_by_role("button").click()
    expect(form.locator("[data-nexus-form-done]")).to_be_visible()

    order = _eventually(lambda: _events(api, visitor, "Order Completed"))[0]
    assert "email" not in order["properties"]  # never sent: personal data
    funnels = api.get("/v1/hosted-funnels/spring-sale").json()
    definition = api.get(f"/v1/funnels/{funnels['analytics_funnel_id']}").json()
    mine = {"property": "anonymous_id", "op": "eq", "value": visitor}
    query = {
        "steps": [
            {**step, "filters": [*step.get("filters", []), mine]} for step in definition["steps"]
        ]
    }

    def converted() -> list[int] | None:
        report = api.post("/v1/funnels/query", json=query)
        assert report.status_code == 200, report.text
        counts = [s["count"] for s in report.json()["steps"]]
        return counts if counts[-1] == 1 else None

    assert _eventually(converted) == [1, 1, 1, 1]


def test_without_emotion_consent_no_text_leaves_the_browser(page: Page, demo: DemoInfo) -> None:
    page.goto(f"/f/{demo.workspace_id}/spring-sale/landing")
    visitor = next(c["value"] for c in page.context.cookies() if c["name"] == "nexus_aid")
    banner = page.locator("[data-nexus-consent-banner]")
    banner.get_by_role("button", name="Only necessary").click()
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.post_data or ""))
    chat = page.locator('[data-nexus-block="chat"]')
    chat.get_by_role("textbox").fill(FRUSTRATED)
    chat.get_by_role("button", name="Send").click()
    expect(chat.locator("[data-nexus-chat-log]")).to_contain_text(FRUSTRATED)
    page.wait_for_timeout(1500)
    assert not any("confusing" in body for body in sent)
    assert page.evaluate("document.documentElement.dataset.nexusTone") not in ("calm", "reassuring")
    expect(page.locator('[data-nexus-block="help"]')).to_be_hidden()
    del visitor
