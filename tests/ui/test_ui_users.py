"""Users and roles in a real browser: create a user and a role, add a member, reset a password
and disable a user, each checked by signing in as that user."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect
from uihelpers import Pages, signin

from iapflow.testing import JsonClient


async def test_create_user_role_members_password_and_disable(
    pages: Pages, admin: JsonClient
) -> None:
    page = await pages.signed_in("admin", "admin")
    await page.get_by_role("link", name="Users and roles").click()
    await page.get_by_label("Username").fill("dave")
    await page.get_by_label("Name", exact=True).fill("Dave D")
    await page.get_by_label("Password").fill("first-pw")
    await page.get_by_role("button", name="Create user").click()
    await expect(page.get_by_role("heading", name="Dave D (user)")).to_be_visible()
    dave_url = page.url

    dave = await pages.signed_in("dave", "first-pw")
    await expect(dave.locator("#user .who")).to_have_text("Dave D")

    # a role with dave as member
    await page.goto("/ui/#/users?type=role")
    await page.get_by_label("Name", exact=True).fill("operators")
    await page.get_by_role("button", name="Create role").click()
    await expect(page.get_by_role("heading", name="operators (role)")).to_be_visible()
    await page.get_by_label("Add member").fill("dav")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("button", name="Add Dave D (user)").click()
    await page.get_by_role("button", name="Save members").click()
    await expect(page.get_by_role("status").filter(has_text="Members saved.")).to_be_visible()
    role = await admin.call("query", collectionname="users", query={"name": "operators"})
    assert [m["name"] for m in role["result"][0]["members"]] == ["Dave D"]
    await page.goto(dave_url)
    await expect(page.get_by_role("link", name="operators")).to_be_visible()

    # reset the password: the new one works, the old one no longer does
    await page.get_by_label("New password").fill("second-pw")
    await page.get_by_role("button", name="Set password").click()
    await expect(page.get_by_role("status").filter(has_text="Password set.")).to_be_visible()
    await pages.signed_in("dave", "second-pw")
    other = await pages.new()
    await signin(other, "dave", "first-pw")
    await expect(other.get_by_role("alert")).to_have_text("unknown username or wrong password")

    # disable: dave's open session is closed by the server and sign-in is refused
    await page.get_by_label("Disabled").check()
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    await expect(dave.get_by_role("heading", name="Sign in")).to_be_visible()
    await signin(other, "dave", "second-pw")
    await expect(other.get_by_role("alert")).to_have_text("user dave is disabled")


async def test_a_user_cannot_create_users_or_disable_itself(pages: Pages, make_user: Any) -> None:
    erin = await make_user("erin")
    await make_user("other")
    page = await pages.signed_in("erin", "secret")
    await page.get_by_role("link", name="Users and roles").click()
    # the list is exactly what the API lets erin read
    readable = await erin.call("query", collectionname="users", query={"_type": "user"})
    names = sorted(u["name"] for u in readable["result"])
    assert "other" not in names
    await expect(page.locator("caption")).to_have_text(f"{len(names)} users you may see")
    shown = await page.locator("tbody td[data-label='Name']").all_inner_texts()
    assert sorted(shown) == names
    await page.get_by_label("Username").fill("mallory")
    await page.get_by_label("Password").fill("pw")
    await page.get_by_role("button", name="Create user").click()
    await expect(page.get_by_role("alert")).to_have_text("only admins can create users")
    await page.get_by_role("link", name="erin").click()
    await page.get_by_label("Name", exact=True).fill("Erin E")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    await page.get_by_label("Disabled").check()
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text("only admins can change disabled")


async def test_admin_impersonates_a_user_and_stops(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    kim = await make_user("kim")
    await kim.call("insertone", collectionname="entities", item={"name": "kim's note"})
    mine = await admin.call("insertone", collectionname="entities", item={"name": "admin's"})
    page = await pages.signed_in("admin", "admin")
    await page.goto(f"/ui/#/user?id={kim.user['_id']}")
    await page.get_by_role("button", name="Sign in as kim").click()
    await expect(page.locator("#user .who")).to_have_text("kim")
    await page.goto("/ui/#/entities?c=entities")
    await expect(page.get_by_role("link", name="kim's note")).to_be_visible()
    await expect(page.get_by_role("link", name="admin's")).to_have_count(0)
    audit = await admin.call("query", collectionname="audit", query={"_type": "impersonate"})
    assert [e["userid"] for e in audit["result"]] == [kim.user["_id"]]
    await page.get_by_role("button", name="Stop impersonating").click()
    await expect(page.locator("#user .who")).to_have_text("admin")
    await expect(page.get_by_role("button", name="Stop impersonating")).to_have_count(0)
    await expect(page.get_by_role("link", name="admin's")).to_be_visible()
    assert mine["result"]["name"] == "admin's"


async def test_a_user_cannot_impersonate_another(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    lea = await make_user("lea")
    mia = await make_user("mia")
    page = await pages.signed_in("lea", "secret")
    await page.goto(f"/ui/#/user?id={mia.user['_id']}")
    await expect(page.get_by_role("alert")).to_contain_text("that you may read")
    # with read right lea sees mia, but impersonating needs update right
    found = await admin.call("query", collectionname="users", query={"_id": mia.user["_id"]})
    doc = found["result"][0]
    acl = [*doc["_acl"], {"_id": lea.user["_id"], "name": "lea", "rights": 2}]
    await admin.call("updateone", collectionname="users", item={**doc, "_acl": acl})
    await page.reload()
    await page.get_by_role("button", name="Sign in as mia").click()
    await expect(page.get_by_role("alert")).to_have_text(
        f"cannot impersonate {mia.user['_id']}: you need update right on that user"
    )
    await expect(page.locator("#user .who")).to_have_text("lea")
