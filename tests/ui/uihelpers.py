"""Helpers for the web interface tests: browser pages that fail the test on JavaScript errors,
and signing in through the form."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

CHROMIUM = os.environ.get("IAPFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage"]
TIMEOUT_MS = 20_000

expect.set_options(timeout=TIMEOUT_MS)


def chromium_path() -> str:
    """The Chromium binary, or a test failure that says how to install it."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `apt-get install -y chromium` "
            "(scripts/bootstrap --dev does it as root) or set IAPFLOW_CHROMIUM"
        )
    return path


class Pages:
    """Browser contexts for one test; a JavaScript error on any page fails the test."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    async def new(self, **context_args: Any) -> Page:
        """A page in a new context (its own sessionStorage: its own signed-in user)."""
        context = await self.browser.new_context(base_url=self.base_url, **context_args)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        page.on("dialog", lambda dialog: dialog.accept())
        return page

    async def signed_in(self, username: str, password: str, **context_args: Any) -> Page:
        """A new page signed in through the sign-in form."""
        page = await self.new(**context_args)
        await signin(page, username, password)
        await expect(page.locator("#signout")).to_be_visible()
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


async def signin(page: Page, username: str, password: str) -> None:
    """Fill in and send the sign-in form."""
    await page.goto("/ui/#/signin")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
