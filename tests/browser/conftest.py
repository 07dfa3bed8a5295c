"""Browser fixtures: a live platform, Debian's headless chromium driven by Playwright, console-error capture.

The tests skip, saying why, when Playwright or /usr/bin/chromium is missing (``.ci/run`` installs
chromium with apt-get when it can). Screenshots land in ``tests/browser/screenshots/`` (gitignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.platform import ACCESS_KEY, SECRET_KEY, Platform, running_platform

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
# A laptop screen.
VIEWPORT = {"width": 1366, "height": 768}


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright, or the project's dev extra)"
    if not CHROMIUM.exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium; .ci/run does this)"
    return None


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    # A one-second metrics flush: the endpoint page's live charts then wait only for their own refresh.
    env = {"NEURONDOCK_METRICS_FLUSH_SECONDS": "1"}
    yield from running_platform(tmp_path_factory.mktemp("nd-browser"), extra_env=env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class ConsolePage:
    """A Playwright page that records console errors and failed page scripts."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error on {page.url}: {exc}"))

    def _on_console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type} on {self.page.url}: {message.text}")

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")
        return response

    def sign_in(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, *, navigate: bool = True) -> None:
        if navigate:
            self.goto("/console/sign-in")
        self.page.fill("#access_key_id", access_key)
        self.page.fill("#secret_access_key", secret_key)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")
        self.page.wait_for_load_state("networkidle")

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        errors, self.errors = self.errors, []
        assert errors == [], "\n".join(errors)


@pytest.fixture
def console(browser, platform) -> Iterator[ConsolePage]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield ConsolePage(page, platform.url)
    finally:
        context.close()
