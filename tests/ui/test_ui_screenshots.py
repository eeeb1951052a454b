"""Every main page rendered on a laptop and on a phone screen with some data in it; no
JavaScript error and nothing wider than the phone's screen. With IAPFLOW_SCREENSHOTS=<dir>
(scripts/screenshots sets docs/screenshots) the pictures in DOCS are kept for docs/web-ui.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect
from uihelpers import Pages, signin

from iapflow.testing import JsonClient

DOCS = {
    "signin-laptop",
    "entities-laptop",
    "acl-laptop",
    "history-laptop",
    "deleted-laptop",
    "users-laptop",
    "files-laptop",
    "audit-laptop",
    "clients-laptop",
    "plugins-laptop",
    "queues-laptop",
    "workitems-laptop",
    "workitemqueue-laptop",
    "agents-laptop",
    "entities-phone",
    "menu-phone",
}
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    """The stub agent runtime, so the agents page has instances to show."""
    return {"agents": {"runtime": "stub"}}


async def seed(admin: JsonClient, make_user: Any) -> dict[str, str]:
    """Documents, a role, users, a file and audit entries, as a small site would have."""
    await make_user("olivia", name="Olivia Operator", email="olivia@example.com")
    await make_user("ravi", name="Ravi Robot")
    pumps = [
        {"name": f"pump {i}", "_type": "pump", "site": "north" if i % 2 else "south", "flow": i * 7}
        for i in range(1, 13)
    ]
    await admin.call("insertmany", collectionname="entities", items=pumps, skipresults=True)
    tank = await admin.call(
        "insertone",
        collectionname="entities",
        item={"name": "tank 1", "_type": "tank", "level": 40},
    )
    doc = tank["result"]
    await admin.call("updateone", collectionname="entities", item={**doc, "level": 55})
    doomed = await admin.call("insertone", collectionname="entities", item={"name": "old valve"})
    await admin.call("deleteone", collectionname="entities", id=doomed["result"]["_id"])
    await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "role", "name": "operators", "members": []},
    )
    await admin.call(
        "savefile", filename="manual.pdf", mimeType="application/pdf", file="JVBERi0xLjQK"
    )
    await admin.call("registerqueue", queuename="orders")
    await admin.call("registerexchange", exchangename="events", algorithm="fanout")
    wiq = await admin.call("addworkitemqueue", name="invoices", maxretries=3)
    for n in range(1, 6):
        await admin.call("addworkitem", wiq="invoices", name=f"invoice {n}", payload={"n": n})
    for state in ("successful", "failed"):
        popped = await admin.call("popworkitem", wiq="invoices")
        await admin.call("updateworkitem", _id=popped["result"]["_id"], state=state)
    await admin.call("popworkitem", wiq="invoices")
    await admin.call("ensurenoderedinstance")
    agent = await admin.call(
        "insertone",
        collectionname="agents",
        item={"_type": "agent", "name": "nightly", "slug": "nightly", "image": "openiap/nodered"},
    )
    await admin.call("startagent", agentid=agent["result"]["_id"])
    return {"tank": doc["_id"], "wiq": wiq["result"]["_id"]}


async def shoot(page: Page, tmp_path: Path, name: str, full_page: bool = False) -> None:
    """A screenshot in tmp_path, or in $IAPFLOW_SCREENSHOTS for the ones the docs show."""
    configured = os.environ.get("IAPFLOW_SCREENSHOTS")
    folder = Path(configured) if configured and name in DOCS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=folder / f"{name}.png", full_page=full_page)


async def fits(page: Page) -> None:
    """Nothing makes the page scroll sideways (tables scroll inside their own box)."""
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"{page.url} is {overflow}px wider than the screen"


@pytest.mark.parametrize("screen", ["laptop", "phone"])
async def test_main_pages_render_on_laptop_and_phone(
    pages: Pages, admin: JsonClient, make_user: Any, tmp_path: Path, screen: str
) -> None:
    ids = await seed(admin, make_user)
    failed = await pages.new()
    await signin(failed, "olivia", "wrong password")
    await expect(failed.get_by_role("alert")).to_be_visible()
    viewport = LAPTOP if screen == "laptop" else PHONE
    page = await pages.new(viewport=viewport, device_scale_factor=1)
    await signin(page, "admin", "admin")
    await expect(page.locator("#signout")).to_be_visible()
    shots = {
        "entities": ("#/entities?c=entities", "Entities"),
        "entity": (f"#/entity?c=entities&id={ids['tank']}", "tank 1"),
        "acl": (f"#/entity?c=entities&id={ids['tank']}&tab=acl", "tank 1"),
        "history": (f"#/entity?c=entities&id={ids['tank']}&tab=history", "tank 1"),
        "deleted": ("#/deleted?c=entities", "Deleted documents"),
        "users": ("#/users", "Users and roles"),
        "files": ("#/files", "Files"),
        "audit": ("#/audit", "Audit log"),
        "clients": ("#/clients", "Clients"),
        "config": ("#/config", "Config"),
        "plugins": ("#/plugins", "Plugins"),
        "queues": ("#/queues", "Queues and exchanges"),
        "workitems": ("#/workitems", "Work item queues"),
        "workitemqueue": (f"#/workitemqueue?id={ids['wiq']}", "Work item queue invoices"),
        "agents": ("#/agents", "Agents and Node-RED"),
    }
    for name, (route, heading) in shots.items():
        await page.goto(f"/ui/{route}")
        await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        await expect(page.locator("main .page")).to_have_attribute(
            "data-page", route[2:].split("?")[0]
        )
        await page.wait_for_load_state("networkidle")
        if name == "history":
            await expect(page.get_by_role("list", name="changes")).to_be_visible()
        await fits(page)
        await shoot(page, tmp_path, f"{name}-{screen}", full_page=screen == "laptop")
    if screen == "phone":
        # the nav folds away behind the menu button on a phone
        await expect(page.locator("#nav")).to_be_hidden()
        await page.get_by_role("button", name="Menu").click()
        await expect(page.get_by_role("link", name="Entities")).to_be_visible()
        await shoot(page, tmp_path, "menu-phone")
    signed_out = await pages.new(viewport=viewport)
    await signed_out.goto("/ui/")
    await expect(signed_out.get_by_role("heading", name="Sign in")).to_be_visible()
    await shoot(signed_out, tmp_path, f"signin-{screen}")
