"""The work item pages in a real browser against a real server: add a queue and an item, a
worker pops it and fails it over the websocket API, the item's failure shows live, it is
resubmitted in the UI and is new again; the queues list follows counts and new queues live;
settings, purge and delete; a user sees only the
queues it may read, and bad input is refused in the server's words."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect
from uihelpers import Pages

from iapflow.testing import JsonClient


async def add_queue(page: Page, name: str) -> None:
    await page.goto("/ui/#/workitems")
    await page.get_by_label("New queue name").fill(name)
    await page.get_by_role("button", name="Add queue").click()
    await expect(page.get_by_role("heading", name=f"Work item queue {name}")).to_be_visible()


async def add_item(page: Page, name: str, payload: str) -> None:
    await page.get_by_label("Item name").fill(name)
    await page.get_by_label("Payload (JSON)").fill(payload)
    await page.get_by_role("button", name="Add item").click()
    await expect(page.get_by_role("status").filter(has_text=f"Added {name}.")).to_be_visible()


async def test_add_pop_fail_resubmit_and_purge(pages: Pages, admin: JsonClient) -> None:
    page = await pages.signed_in("admin", "admin")
    await add_queue(page, "invoices")
    await expect(page.locator(".live")).to_contain_text("live")
    await add_item(page, "invoice 42", '{"invoice": 42, "amount": 9.5}')
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="invoice 42"))
    await expect(row.locator(".state")).to_have_text("new")

    # a worker takes it through the API and reports a failure
    popped = await admin.call("popworkitem", wiq="invoices")
    assert popped["result"]["name"] == "invoice 42"
    assert popped["result"]["payload"] == {"invoice": 42, "amount": 9.5}
    await expect(row.locator(".state")).to_have_text("processing")  # live, through the watch
    await admin.call(
        "updateworkitem",
        _id=popped["result"]["_id"],
        state="failed",
        errormessage="ledger closed",
        errortype="business",
    )
    await expect(row.locator(".state")).to_have_text("failed")
    await expect(row).to_contain_text("ledger closed")

    # inspect it, then resubmit it from its page
    await row.get_by_role("link", name="invoice 42").click()
    await expect(page.get_by_role("heading", name="Work item invoice 42")).to_be_visible()
    await expect(page.locator("dl.summary")).to_contain_text("business: ledger closed")
    await page.get_by_role("button", name="Resubmit invoice 42").click()
    await expect(page.locator("dl.summary .state")).to_have_text("new")
    await page.get_by_label("Payload (JSON)").fill('{"invoice": 42, "amount": 10}')
    await page.get_by_role("button", name="Save payload").click()
    await expect(page.get_by_label("Payload (JSON)")).to_have_value(
        '{\n  "invoice": 42,\n  "amount": 10\n}'
    )
    again = await admin.call("popworkitem", wiq="invoices")
    assert again["result"]["_id"] == popped["result"]["_id"]
    assert again["result"]["payload"] == {"invoice": 42, "amount": 10}
    await admin.call("updateworkitem", _id=again["result"]["_id"], state="failed")

    # the list filtered by state, and resubmit from the list
    await page.get_by_role("link", name="← invoices").click()
    await page.get_by_label("State").select_option("failed")
    await expect(page.locator("caption")).to_have_text("1 item in state failed")
    await page.get_by_role("button", name="Resubmit invoice 42").click()
    await expect(page.locator("caption")).to_have_text("0 items in state failed")
    item = await admin.call("query", collectionname="workitems", query={"wiq": "invoices"})
    assert [i["state"] for i in item["result"]] == ["new"]

    # the queues list counts items by state
    await page.get_by_role("link", name="← Work item queues").click()
    queue_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="invoices"))
    await expect(queue_row.locator("td[data-label=new]")).to_have_text("1")

    # live: a worker's pop moves the counts, and a queue added elsewhere appears
    await admin.call("popworkitem", wiq="invoices")
    await expect(queue_row.locator("td[data-label=processing]")).to_have_text("1")
    await expect(queue_row.locator("td[data-label=new]")).to_have_text("0")
    await admin.call("addworkitemqueue", name="receipts")
    await expect(page.get_by_role("link", name="receipts")).to_be_visible()

    # the ACL: the queue's users role has full control
    await queue_row.get_by_role("link", name="invoices").click()
    await page.get_by_role("link", name="ACL").click()
    await expect(page.get_by_label("full control for invoices users")).to_be_checked()

    # settings and purge
    await page.get_by_role("link", name="Settings").click()
    await page.get_by_label("Max retries").fill("5")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.get_by_role("status").filter(has_text="Settings saved.")).to_be_visible()
    stored = await admin.call("getworkitemqueue", name="invoices")
    assert stored["result"]["maxretries"] == 5
    await page.get_by_role("button", name="Purge items").click()  # confirm accepted
    await expect(page.get_by_role("status").filter(has_text="Purged invoices")).to_be_visible()
    left = await admin.call("count", collectionname="workitems", query={"wiq": "invoices"})
    assert left["result"] == 0
    await page.get_by_role("button", name="Delete queue").click()
    await expect(page.get_by_role("heading", name="Work item queues")).to_be_visible()
    await expect(page.get_by_role("link", name="invoices")).to_have_count(0)
    gone = await admin.call("count", collectionname="mq", query={"name": "invoices"})
    assert gone["result"] == 0


async def test_errors_are_the_servers_and_a_user_sees_only_its_queues(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    await admin.call("addworkitemqueue", name="admin jobs")
    await make_user("wiuser")
    page = await pages.signed_in("wiuser", "secret")
    await add_queue(page, "my jobs")
    await page.get_by_role("link", name="← Work item queues").click()
    await expect(page.get_by_role("link", name="my jobs")).to_be_visible()
    await expect(page.get_by_role("link", name="admin jobs")).to_have_count(0)

    # a duplicate name and bad JSON are refused, in the server's and the form's words
    await page.get_by_label("New queue name").fill("my jobs")
    await page.get_by_role("button", name="Add queue").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "a work item queue named 'my jobs' already exists"
    )
    await page.get_by_role("link", name="my jobs").click()
    await page.get_by_label("Payload (JSON)").fill("{oops")
    await page.get_by_role("button", name="Add item").click()
    await expect(page.get_by_role("alert")).to_contain_text("Payload is not valid JSON")

    # a queue with items is not deleted without its items
    await add_item(page, "job 1", '{"n": 1}')
    await page.get_by_role("link", name="Settings").click()
    await page.get_by_role("button", name="Delete queue").click()
    await expect(page.get_by_role("alert")).to_contain_text("purge")
    await page.get_by_label("Also delete its items").check()
    await page.get_by_role("button", name="Delete queue").click()
    await expect(page.get_by_role("heading", name="Work item queues")).to_be_visible()
    assert (await admin.call("count", collectionname="workitems", query={}))["result"] == 0

    hidden = await admin.call("getworkitemqueue", name="admin jobs")
    await page.goto(f"/ui/#/workitemqueue?id={hidden['result']['_id']}")
    await expect(page.get_by_role("alert")).to_contain_text("not found, or you have no access")
