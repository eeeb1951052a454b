"""The queues pages in a real browser against a real server: names that websocket clients
register appear in the list live, filter by name and type, open on their document and ACL, and
a deleted claim leaves the list; a user sees only the mq documents it may read."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect
from uihelpers import Pages

from iapflow.testing import JsonClient


async def test_a_registered_queue_shows_up_and_opens(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    page = await pages.signed_in("admin", "admin")
    await page.goto("/ui/#/queues")
    await expect(page.get_by_role("heading", name="Queues and exchanges")).to_be_visible()
    await expect(page.locator(".live")).to_contain_text("live")
    worker = await make_user("qworker")
    await worker.call("registerqueue", queuename="Orders.In")
    await worker.call("registerexchange", exchangename="news", algorithm="fanout")
    # live, through the watch on mq; names are lower-cased by the server
    await expect(page.get_by_role("link", name="orders.in")).to_be_visible()
    await expect(page.get_by_role("link", name="news")).to_be_visible()

    await page.get_by_label("Type").select_option("exchange")
    await expect(page.get_by_role("link", name="news")).to_be_visible()
    await expect(page.get_by_role("link", name="orders.in")).to_have_count(0)
    await page.get_by_label("Type").select_option("")
    await page.get_by_label("Name contains").fill("ORDERS")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name="orders.in")).to_be_visible()
    await expect(page.get_by_role("link", name="news")).to_have_count(0)

    await page.get_by_role("link", name="orders.in").click()
    await expect(page.get_by_role("heading", name="Queue orders.in")).to_be_visible()
    await expect(page.get_by_label("document")).to_contain_text('"_type": "queue"')
    await page.get_by_role("link", name="ACL").click()
    # the registrant got full control of the name it claimed
    await expect(page.get_by_label("full control for qworker")).to_be_checked()

    await page.get_by_role("link", name="Document").click()
    await page.get_by_role("button", name="Delete").click()  # the confirm dialog is accepted
    await expect(page.get_by_role("heading", name="Queues and exchanges")).to_be_visible()
    await expect(page.get_by_role("link", name="news")).to_be_visible()
    await expect(page.get_by_role("link", name="orders.in")).to_have_count(0)
    left = await admin.call("count", collectionname="mq", query={"name": "orders.in"})
    assert left["result"] == 0


async def test_a_user_sees_only_the_queues_it_may_read(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    alice = await make_user("qalice")
    bob = await make_user("qbob")
    await alice.call("registerqueue", queuename="alice.private")
    await bob.call("registerqueue", queuename="bob.own")
    hidden = await admin.call("query", collectionname="mq", query={"name": "alice.private"})
    alice_queue = hidden["result"][0]["_id"]

    page = await pages.signed_in("qbob", "secret")
    await page.goto("/ui/#/queues")
    await expect(page.get_by_role("link", name="bob.own")).to_be_visible()
    await expect(page.locator("caption")).to_have_text("mq: 1 name you may read")
    await expect(page.get_by_role("link", name="alice.private")).to_have_count(0)
    await page.goto(f"/ui/#/queue?id={alice_queue}")
    await expect(page.get_by_role("alert")).to_have_text(
        f"No queue or exchange {alice_queue} that you may read."
    )

    # bob may read his own claim but the server decides what he may change: removing his
    # own entry from the ACL would leave him without update right, and it says so
    await page.goto("/ui/#/queues")
    await page.get_by_role("link", name="bob.own").click()
    await page.get_by_role("link", name="ACL").click()
    await page.get_by_role("button", name="Remove qbob").click()
    await page.get_by_role("button", name="Save ACL").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "the new _acl would take away your own update right"
    )
