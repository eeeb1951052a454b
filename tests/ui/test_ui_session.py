"""The session in a real browser: the tab keeps the token the server refreshes, and keeps
working after the first token's lifetime."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect
from uihelpers import Pages, signin


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"auth": {"token_lifetime_seconds": 10, "refresh_before_seconds": 8}}


async def test_the_refreshed_token_is_kept_and_used(pages: Pages) -> None:
    page = await pages.signed_in("admin", "admin")
    first = await page.evaluate("sessionStorage.getItem('iapflow.jwt')")
    await page.wait_for_function(
        "first => sessionStorage.getItem('iapflow.jwt') !== first", arg=first, timeout=30_000
    )
    # once the first token has expired, the connection still works on the refreshed one
    await page.wait_for_function(
        """first => {
            const part = first.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
            return JSON.parse(atob(part)).exp * 1000 < Date.now();
        }""",
        arg=first,
        timeout=30_000,
    )
    await page.get_by_role("link", name="Files").click()
    await expect(page.get_by_role("heading", name="Files")).to_be_visible()
    await expect(page.locator("caption")).to_contain_text("you may read")
    # and a reload signs the tab in again with the kept (new) token
    await page.reload()
    await expect(page.locator("#signout")).to_be_visible()


class TestSigninTimeout:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        return {"websocket": {"signin_timeout_seconds": 1}}

    async def test_a_refused_sign_in_then_the_timeout_leaves_the_form_usable(
        self, pages: Pages
    ) -> None:
        page = await pages.new()
        await signin(page, "admin", "wrong")
        await expect(page.get_by_role("alert")).to_have_text("unknown username or wrong password")
        # the server closes the signed-out connection after a second; the page stays quiet
        # and the next sign-in opens a new one
        await page.wait_for_timeout(1500)
        await expect(page.locator("#banner")).to_be_hidden()
        await expect(page.get_by_role("alert")).to_have_text("unknown username or wrong password")
        await page.get_by_label("Password").fill("admin")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#signout")).to_be_visible()
