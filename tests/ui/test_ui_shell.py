"""The app shell in a real browser: assets served with their headers, sign in and out, a
refused sign-in shown in the server's words, and the token kept per tab."""

from __future__ import annotations

import asyncio

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
        host = base_url.split("://", 1)[1].rstrip("/")
        csp = index.headers["content-security-policy"]
        assert f"script-src {host}/ui/;" in csp and f"style-src {host}/ui/;" in csp
        assert (await http.get("/ui/api.js")).headers["content-type"].startswith("text/javascript")
        # the folder is also a Python package: its Python files are not served
        assert (await http.get("/ui/__init__.py")).status_code == 404
        assert (await http.get("/ui/nosuch.js")).status_code == 404


async def _raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (httpx would resolve dot segments first)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_only_ui_assets_are_served_whatever_the_path(base_url: str) -> None:
    # A trailing slash, dot segments (plain, encoded or with backslashes), NUL bytes and huge
    # paths never reach a Python file or anything outside the UI's folder.
    for path in (
        "/ui/__init__.py/",
        "/ui/./__init__.py/",
        "/ui/pages/../__init__.py/",
        "/ui/../app.py",
        "/ui/%2e%2e/app.py",
        "/ui/%2e%2e/__init__.py/",
        "/ui/..%2f__init__.py",
        "/ui/..%5c__init__.py/",
        "/ui/..\\__init__.py",
        "/ui/index.html%00.js",
        "/ui/__init__.py%00.js",
        "/ui/pages/",
        "/ui/" + "a" * 20000 + ".js",
    ):
        status, body = await _raw_get(base_url, path)
        assert status in (400, 404, 414), (path[:40], status)
        assert b"import" not in body and b'"""' not in body, path[:40]
    # what is served keeps its headers, also on a HEAD
    async with httpx.AsyncClient(base_url=base_url) as http:
        head = await http.head("/ui/app.js")
        assert head.status_code == 200
        assert head.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in head.headers["content-security-policy"]
        # refusals carry them too
        for refused in (await http.post("/ui/app.js"), await http.get("/ui/nosuch.js")):
            assert refused.status_code in (404, 405)
            assert refused.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'self'" in refused.headers["content-security-policy"]


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


async def test_keyboard_only_sign_in_and_navigation(pages: Pages) -> None:
    page = await pages.new()
    await page.goto("/ui/")
    await expect(page.get_by_label("Username")).to_be_focused()
    await page.keyboard.type("admin")
    await page.keyboard.press("Tab")
    await page.keyboard.type("admin")
    await page.keyboard.press("Enter")
    await expect(page.locator("#signout")).to_be_visible()
    # the first page's heading takes the focus, so the keyboard starts at the content
    await expect(page.get_by_role("heading", name="Entities")).to_be_focused()
    files = page.get_by_role("navigation", name="pages").get_by_role("link", name="Files")
    await files.focus()
    outline = await files.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline == "solid"  # focus is visible
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Files")).to_be_focused()
    await expect(files).to_have_attribute("aria-current", "page")


async def test_every_nav_entry_opens_its_page(pages: Pages) -> None:
    page = await pages.signed_in("admin", "admin")
    nav = page.get_by_role("navigation", name="pages")
    titles = await nav.get_by_role("link").all_inner_texts()
    assert {"Entities", "Users and roles", "Files", "Clients", "Audit log"} <= set(titles)
    for title in titles:
        await nav.get_by_role("link", name=title, exact=True).click()
        await expect(nav.get_by_role("link", name=title, exact=True)).to_have_attribute(
            "aria-current", "page"
        )
        await expect(page.locator("main h1")).to_be_visible()


async def test_a_real_page_replaces_a_placeholder_in_either_order(pages: Pages) -> None:
    page = await pages.signed_in("admin", "admin")
    result = await page.evaluate(
        """async () => {
            const registry = await import("/ui/registry.js");
            const render = () => {};
            registry.registerPage({id: "t1", title: "soon", placeholder: true, render});
            registry.registerPage({id: "t1", title: "real", render});
            registry.registerPage({id: "t2", title: "real", render});
            registry.registerPage({id: "t2", title: "soon", placeholder: true, render});
            let twice = "";
            try { registry.registerPage({id: "t2", title: "again", render}); }
            catch (err) { twice = err.message; }
            return [registry.getPage("t1").title, registry.getPage("t2").title, twice];
        }"""
    )
    assert result == ["real", "real", "page 't2' is registered twice"]
