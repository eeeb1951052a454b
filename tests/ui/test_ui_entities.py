"""The entities pages in a real browser against a real server: create, edit, history diff,
delete and restore, and an ACL grant that makes a document appear, live, in another user's
session."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect
from uihelpers import Pages

from iapflow.testing import JsonClient


async def create_in_ui(page: Page, item: str) -> None:
    await page.goto("/ui/#/entities?c=entities")
    await page.get_by_role("link", name="New document").click()
    await page.get_by_label("Document (JSON)").fill(item)
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("status").filter(has_text="Created.")).to_be_visible()


async def test_create_a_document_and_see_it_listed(pages: Pages, admin: JsonClient) -> None:
    page = await pages.signed_in("admin", "admin")
    await create_in_ui(page, '{"name": "pump 1", "_type": "pump", "flow": 3}')
    await expect(page.get_by_role("heading", name="pump 1")).to_be_visible()
    stored = await admin.call("query", collectionname="entities", query={"name": "pump 1"})
    assert [(d["_type"], d["flow"]) for d in stored["result"]] == [("pump", 3)]
    await page.get_by_role("link", name="← entities").click()
    await expect(page.get_by_role("link", name="pump 1")).to_be_visible()
    # the filter narrows the list
    await admin.call("insertone", collectionname="entities", item={"name": "valve", "_type": "v"})
    await expect(page.get_by_role("link", name="valve")).to_be_visible()  # live, by watch
    await page.get_by_label("Filter (JSON)").fill('{"_type": "pump"}')
    await page.get_by_role("button", name="Query").click()
    await expect(page.get_by_role("link", name="pump 1")).to_be_visible()
    await expect(page.get_by_role("link", name="valve")).to_have_count(0)


async def test_server_errors_are_shown_as_the_server_phrased_them(pages: Pages) -> None:
    page = await pages.signed_in("admin", "admin")
    await page.goto("/ui/#/entities?c=entities")
    await page.get_by_label("Filter (JSON)").fill('{"$where": "1"}')
    await page.get_by_role("button", name="Query").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("$where")
    await page.get_by_label("Filter (JSON)").fill("{nope")
    await page.get_by_role("button", name="Query").click()
    await expect(page.get_by_role("alert")).to_contain_text("Filter is not valid JSON")


async def test_paging_through_a_large_result(pages: Pages, admin: JsonClient) -> None:
    items = [{"name": f"item {i:03}", "_type": "bulk"} for i in range(60)]
    await admin.call("insertmany", collectionname="entities", items=items, skipresults=True)
    page = await pages.signed_in("admin", "admin")
    await page.goto("/ui/#/entities?c=entities&q=%7B%22_type%22%3A%22bulk%22%7D")
    pager = page.get_by_role("navigation", name="pages")
    await expect(pager.locator(".range")).to_have_text("1\u201325 of 60")
    await pager.get_by_role("button", name="Next").click()
    await expect(pager.locator(".range")).to_have_text("26\u201350 of 60")
    await pager.get_by_role("button", name="Next").click()
    await expect(pager.locator(".range")).to_have_text("51\u201360 of 60")
    await expect(pager.get_by_role("button", name="Next")).to_be_disabled()
    await expect(page.get_by_role("link", name="item 000")).to_be_visible()  # newest id last


async def test_edit_then_see_the_difference_in_history(pages: Pages) -> None:
    page = await pages.signed_in("admin", "admin")
    await create_in_ui(page, '{"name": "tank", "_type": "tank", "level": 10}')
    editor = page.get_by_label("Document (JSON)")
    text = await editor.input_value()
    await editor.fill(text.replace('"level": 10', '"level": 42'))
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status").filter(has_text="Saved as version 1.")).to_be_visible()
    await page.get_by_role("link", name="History").click()
    changes = page.get_by_role("list", name="changes")
    level = changes.locator("li").filter(has_text="level")
    await expect(level.locator("del")).to_have_text("10")
    await expect(level.locator("ins")).to_have_text("42")


async def test_delete_and_restore_from_deleted_documents(pages: Pages, admin: JsonClient) -> None:
    page = await pages.signed_in("admin", "admin")
    await create_in_ui(page, '{"name": "to be deleted", "_type": "x"}')
    await page.get_by_role("button", name="Delete").click()  # the confirm dialog is accepted
    await expect(page.get_by_role("heading", name="Entities")).to_be_visible()
    await expect(page.get_by_role("link", name="to be deleted")).to_have_count(0)
    assert (await admin.call("count", collectionname="entities", query={"_type": "x"}))[
        "result"
    ] == 0
    await page.get_by_role("link", name="Deleted documents").click()
    await page.get_by_role("button", name="Restore to be deleted").click()
    await expect(page.get_by_role("status")).to_contain_text("Restored to be deleted")
    assert (await admin.call("count", collectionname="entities", query={"_type": "x"}))[
        "result"
    ] == 1
    await page.get_by_role("link", name="← entities").click()
    await expect(page.get_by_role("link", name="to be deleted")).to_be_visible()


async def test_grant_read_through_the_acl_editor_shows_it_to_that_user(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    await make_user("bob")
    doc = await admin.call(
        "insertone", collectionname="entities", item={"name": "secret plan", "_type": "plan"}
    )
    bob = await pages.signed_in("bob", "secret")
    await bob.goto("/ui/#/entities?c=entities")
    await expect(bob.locator(".live")).to_contain_text("live")
    await expect(bob.get_by_role("link", name="secret plan")).to_have_count(0)

    page = await pages.signed_in("admin", "admin")
    await page.goto(f"/ui/#/entity?c=entities&id={doc['result']['_id']}&tab=acl")
    await page.get_by_label("Add user or role").fill("bob")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("button", name="Add bob (user)").click()
    await expect(page.get_by_label("read for bob")).to_be_checked()
    await page.get_by_role("button", name="Save ACL").click()
    await expect(page.get_by_role("status").filter(has_text="ACL saved.")).to_be_visible()

    # bob's open list shows it without a reload: the watch event passed bob's read check
    await expect(bob.get_by_role("link", name="secret plan")).to_be_visible()
    await bob.get_by_role("link", name="secret plan").click()
    await expect(bob.get_by_role("heading", name="secret plan")).to_be_visible()
    # bob may read but not change it: the server's refusal is shown as it said it
    await bob.get_by_role("button", name="Save").click()
    await expect(bob.get_by_role("alert")).to_have_text(
        f"item {doc['result']['_id']} not found, or you lack update right on it"
    )


async def test_a_user_cannot_open_another_users_document(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    await make_user("carol")
    doc = await admin.call("insertone", collectionname="entities", item={"name": "admin only"})
    page = await pages.signed_in("carol", "secret")
    await page.goto("/ui/#/entities?c=entities")
    await expect(page.locator("caption")).to_have_text("entities: 0 documents")
    await page.goto(f"/ui/#/entity?c=entities&id={doc['result']['_id']}")
    await expect(page.get_by_role("alert")).to_contain_text("that you may read")
    await page.goto(f"/ui/#/entity?c=entities&id={doc['result']['_id']}&tab=history")
    await expect(page.get_by_role("alert")).to_contain_text("that you may read")
    await page.goto("/ui/#/deleted?c=entities")
    await expect(page.get_by_role("heading", name="Deleted documents")).to_be_visible()
    await expect(page.get_by_role("link", name="admin only")).to_have_count(0)


async def test_a_large_document_travels_in_pieces_both_ways(
    pages: Pages, admin: JsonClient
) -> None:
    """Over the 25 000-character piece size: the page sends it in pieces and puts the reply's
    pieces back together."""
    big = "x" * 60_000
    page = await pages.signed_in("admin", "admin")
    await create_in_ui(page, f'{{"name": "big one", "_type": "big", "blob": "{big}"}}')
    stored = await admin.call("query", collectionname="entities", query={"_type": "big"})
    assert stored["result"][0]["blob"] == big
    await page.reload()
    text = await page.get_by_label("Document (JSON)").input_value()
    assert big in text
