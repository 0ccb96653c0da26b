"""One ``nexus demo`` process and one Chromium for every browser test of the suite.

Starting a demo (seeding a week of history, migrating, loading the models) is most of a
browser test's cost, so the browser test modules share one for the session, and one
browser; each test opens its own browser context (no cookies or storage carried over).
The tests must not rely on the demo being untouched: other modules change flags, create
funnels and send events in it, as a marketer and visitors would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.cli.demo_process import DemoInfo, running_demo
from tests.web.test_browser import _chromium_path


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoInfo]:
    """The shared demo server; always stopped at the end of the session."""
    with running_demo(tmp_path_factory.mktemp("browser-demo")) as (_process, info, _ready):
        yield info


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = _chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root in containers, where Chromium's sandbox refuses.
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()
