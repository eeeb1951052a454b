"""Fixtures for the web interface tests: a real server (tests/conftest.py), Debian's Chromium
driven by Playwright, and helpers to sign in through the UI.

Playwright's own browser download is never used: the tests launch /usr/bin/chromium, which
scripts/bootstrap --dev installs. Without it the tests fail (in CI and everywhere else) with
the line to run, rather than skipping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright
from uihelpers import CHROMIUM_ARGS, Pages, chromium_path


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the whole session."""
    path = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
def base_url(server: str) -> str:
    """The server's HTTP address (``server`` is its websocket URL)."""
    return server.replace("ws://", "http://", 1).removesuffix("/ws")


@pytest.fixture
async def pages(browser: Browser, base_url: str) -> AsyncIterator[Pages]:
    """Open pages on the test's server; closed at the end, JavaScript errors fail the test."""
    opened = Pages(browser, base_url)
    yield opened
    await opened.close()
    assert not opened.errors, f"JavaScript errors: {opened.errors}"


@pytest.fixture
def ui_user(make_user: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[str]]:
    """Create a user through the API; returns its username (password "secret")."""

    async def create(username: str = "", **fields: Any) -> str:
        client = await make_user(username, **fields)
        return str(client.user["username"])

    return create
