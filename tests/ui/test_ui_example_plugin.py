"""The example plugin's page (tests/plugins/hello, ``register_ui``) in a real browser: listed in
the navigation, calling its command through the API, showing only the user's own greetings."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect
from uihelpers import Pages


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"hello": {"greeting": "Welcome"}}


async def test_a_plugins_page_is_in_the_navigation_and_calls_its_command(
    pages: Pages, make_user: Any
) -> None:
    await make_user("hilda")
    await make_user("ivar")
    page = await pages.signed_in("hilda", "secret")
    await page.get_by_role("link", name="Hello").click()
    await expect(page.get_by_role("heading", name="Hello")).to_be_visible()
    await expect(page.locator("caption")).to_have_text("your greetings")
    await page.get_by_label("Name").fill("browser")
    await page.get_by_role("button", name="Say hello").click()
    await expect(page.get_by_role("status")).to_have_text("Welcome, browser! (1 greetings)")
    await expect(page.locator("tbody tr")).to_have_count(1)
    await page.get_by_label("Name").fill("x" * 41)
    await page.get_by_role("button", name="Say hello").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "name must be text of at most 40 characters"
    )
    other = await pages.signed_in("ivar", "secret")
    await other.get_by_role("link", name="Hello").click()
    await expect(other.locator("caption")).to_have_text("your greetings")
    await expect(other.locator("tbody tr")).to_have_count(0)  # hilda's greeting is hers
