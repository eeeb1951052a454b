"""The audit log, clients, config and plugins pages in a real browser, for an admin and for a
user who must see only what the API lets that user see."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect
from uihelpers import Pages, signin

from iapflow.testing import JsonClient


async def test_failed_sign_in_is_refused_and_visible_in_the_audit_log(pages: Pages) -> None:
    intruder = await pages.new()
    await signin(intruder, "admin", "guess")
    await expect(intruder.get_by_role("alert")).to_have_text("unknown username or wrong password")
    page = await pages.signed_in("admin", "admin")
    await page.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Failed sign-ins only").check()
    await page.get_by_role("button", name="Show").click()
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("admin")
    await expect(rows.first).to_contain_text("failed")
    await expect(rows.first).to_contain_text("iapflow-web")


async def test_a_user_sees_only_its_own_audit_entries(pages: Pages, make_user: Any) -> None:
    await make_user("gina")
    intruder = await pages.new()
    await signin(intruder, "admin", "guess")
    await expect(intruder.get_by_role("alert")).to_be_visible()
    page = await pages.signed_in("gina", "secret")
    await page.get_by_role("link", name="Audit log").click()
    await expect(page.locator("caption")).to_contain_text("you may read")
    users = await page.locator("tbody td[data-label='User']").all_inner_texts()
    assert users and set(users) == {"gina"}
    await page.get_by_label("Failed sign-ins only").check()
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("caption")).to_have_text("0 entries you may read")


async def test_admin_sees_clients_and_disconnects_one(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    await make_user("hank")
    hank = await pages.signed_in("hank", "secret")
    page = await pages.signed_in("admin", "admin")
    await page.get_by_role("link", name="Clients").click()
    row = page.locator("tbody tr").filter(has_text="hank").filter(has_text="iapflow-web")
    await expect(row).to_have_count(1)
    await expect(page.locator("tbody tr").filter(has_text="(this tab)")).to_have_count(1)
    await row.get_by_role("button", name="Disconnect").click()
    await expect(page.get_by_role("status").filter(has_text="Disconnected hank.")).to_be_visible()
    await expect(page.locator("tbody tr").filter(has_text="hank")).to_have_count(
        1  # hank's tab reconnects with its token: a new connection
    )
    # hank's tab saw the server close its connection and came back signed in
    await expect(hank.locator("#signout")).to_be_visible()
    audit = await admin.call(
        "query", collectionname="audit", query={"_type": "killwebsocketclient"}
    )
    assert len(audit["result"]) == 1


async def test_a_user_gets_the_servers_refusal_on_the_clients_page(
    pages: Pages, make_user: Any
) -> None:
    await make_user("ivy")
    page = await pages.signed_in("ivy", "secret")
    await page.get_by_role("link", name="Clients").click()
    await expect(page.get_by_role("alert")).to_contain_text("admins")
    await expect(page.locator("tbody tr")).to_have_count(0)


async def test_config_and_plugins_pages(pages: Pages) -> None:
    page = await pages.signed_in("admin", "admin")
    await page.get_by_role("link", name="Config").click()
    await expect(page.get_by_label("server config")).to_contain_text('"websocket_package_size"')
    await expect(page.get_by_role("list", name="your roles")).to_contain_text("admins")
    await page.get_by_role("button", name="Run housekeeping").click()
    await expect(page.get_by_role("status").filter(has_text="Housekeeping done")).to_be_visible()
    await page.get_by_role("button", name="Clear role cache").click()
    await expect(page.get_by_role("status").filter(has_text="Role cache cleared.")).to_be_visible()
    await page.get_by_role("link", name="Plugins").click()
    signin = page.locator("tbody tr").filter(has_text="iapflow.builtin.signin")
    await expect(signin).to_have_count(1)
    await expect(signin).to_contain_text("auth provider local")
    mongo = page.locator("tbody tr").filter(has_text="iapflow-mongo")
    await expect(mongo).to_contain_text("storage mongo (selected)")


async def test_a_user_gets_the_servers_refusal_for_maintenance(
    pages: Pages, make_user: Any
) -> None:
    await make_user("jack")
    page = await pages.signed_in("jack", "secret")
    await page.get_by_role("link", name="Config").click()
    await expect(page.get_by_role("list", name="your roles")).to_be_visible()
    await page.get_by_role("button", name="Run housekeeping").click()
    await expect(page.get_by_role("alert")).to_contain_text("admins")
