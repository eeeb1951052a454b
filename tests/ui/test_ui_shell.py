"""The app shell in a real browser: assets served with their headers, sign in and out, a
refused sign-in shown in the server's words, and the token kept per tab."""

from __future__ import annotations

import httpx
from playwright.async_api import expect
from uihelpers import Pages, signin


async def test_assets_are_served_under_ui_with_security_headers(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        root = await http.get("/")
        assert root.status_code == 307
        assert root.headers["location"] == "/ui/"
        index = await http.get("/ui/")
        assert index.status_code == 200
        assert '<script type="module" src="app.js">' in index.text
        assert "script-src 'self'" in index.headers["content-security-policy"]
        assert (await http.get("/ui/api.js")).headers["content-type"].startswith("text/javascript")
        # the folder is also a Python package: its Python files are not served
        assert (await http.get("/ui/__init__.py")).status_code == 404
        assert (await http.get("/ui/nosuch.js")).status_code == 404


async def test_sign_in_and_out(pages: Pages) -> None:
    page = await pages.new()
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await signin(page, "admin", "admin")
    await expect(page.locator("#signout")).to_be_visible()
    await expect(page.locator("#user .who")).to_have_text("admin")
    # a reload signs in again with the token kept in this tab's sessionStorage
    await page.reload()
    await expect(page.locator("#signout")).to_be_visible()
    await page.locator("#signout").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator(".status")).to_have_text("Signed out.")
    assert await page.evaluate("sessionStorage.getItem('iapflow.jwt')") is None
    # a page behind sign-in sends you to the form, then back where you were going
    await page.goto("/ui/#/queues")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill("admin")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Queues")).to_be_visible()


async def test_refused_sign_in_shows_the_server_message(pages: Pages) -> None:
    page = await pages.new()
    await signin(page, "admin", "wrong")
    await expect(page.get_by_role("alert")).to_have_text("unknown username or wrong password")
    await expect(page.locator("#signout")).to_have_count(0)


async def test_the_websocket_on_slash_still_works(admin: object) -> None:
    """GET / redirects to the UI, but / stays a JSON websocket path (the admin client here
    connects to /ws; this connects to / itself)."""
    from iapflow.testing import JsonClient

    url = admin.url.removesuffix("/ws") + "/"  # type: ignore[attr-defined]
    async with JsonClient(url) as client:
        reply = await client.signin("admin", "admin")
        assert reply["user"]["username"] == "admin"
