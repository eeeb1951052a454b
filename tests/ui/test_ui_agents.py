"""The agents page in a real browser against a real server whose agent runtime is `process`:
real Node-RED 4.1 from npm, installed once into pytest's cache (the same folder as
plugins/nodered's tests). Create and start the signed-in user's instance, see it running, see
its log, stop and delete it; the same for an agent document; a non-admin sees neither another
user's instance nor agent; with no runtime the page shows the server's reason."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, WebSocketRoute, expect
from uihelpers import Pages

from iapflow.testing import JsonClient, ReplyError
from iapflow_nodered.install import DEFAULT_VERSION, ensure_installed

STARTUP_MS = 90_000  # a cold Node-RED start on a loaded two-core machine


@pytest.fixture(scope="session")
async def node_red_dir(request: pytest.FixtureRequest) -> Path:
    """Node-RED installed under pytest's cache (about 15 s with npm the first time)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed: apt-get install nodejs npm")
    assert request.config.cache is not None, "run pytest with its cache provider"
    folder = request.config.cache.mkdir("iapflow-nodered") / f"node-red-{DEFAULT_VERSION}"
    await ensure_installed(folder.absolute())
    return folder.absolute()


@pytest.fixture
def config_overrides(node_red_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        "agents": {
            "runtime": "process",
            "install_dir": str(node_red_dir),
            "base_port": 19300,
            "stop_timeout_seconds": 5.0,
        }
    }


@pytest.fixture
async def cleanup(admin: JsonClient) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """Instances outlive the server: whatever a test leaves running is deleted at the end."""
    calls: list[tuple[str, dict[str, Any]]] = []
    yield calls
    for command, data in calls:
        with contextlib.suppress(ReplyError):  # already deleted by the test
            await admin.call(command, **data)


def instance_box(page: Page) -> Any:
    return page.get_by_role("region", name="Your Node-RED instance")


async def test_create_start_log_stop_and_delete_a_node_red_instance(
    pages: Pages, admin: JsonClient, cleanup: list[tuple[str, dict[str, Any]]]
) -> None:
    cleanup.append(("deletenoderedinstance", {}))
    page = await pages.signed_in("admin", "admin")
    await page.goto("/ui/#/agents")
    box = instance_box(page)
    await expect(box).to_contain_text("There is no Node-RED instance yet.")
    await box.get_by_role("button", name="Create and start").click()
    state = box.locator("dl.summary .state")
    await expect(state).to_have_text("running", timeout=STARTUP_MS)  # polled while it starts

    pod = (await admin.call("getnoderedinstance"))["result"]
    assert pod["state"] == "running" and pod["name"] == "admin"
    editor = box.get_by_role("link", name="Open the editor of admin")
    await expect(editor).to_have_attribute("href", pod["url"])
    await expect(box).to_contain_text(f"pid {pod['pid']}, port {pod['port']}")

    await box.get_by_role("button", name="Show log").click()
    await expect(box.get_by_label("Log of admin")).to_contain_text("Server now running")

    await box.get_by_role("button", name="Stop").click()
    await expect(state).to_have_text("stopped", timeout=STARTUP_MS)
    await expect(editor).to_have_count(0)
    assert (await admin.call("getnoderedinstance"))["result"]["state"] == "stopped"

    await box.get_by_role("button", name="Delete").click()  # the confirm dialog is accepted
    await expect(box).to_contain_text("There is no Node-RED instance yet.")
    assert (await admin.call("getnoderedinstance"))["results"] == []


async def test_an_agent_document_and_what_another_user_sees(
    pages: Pages, admin: JsonClient, make_user: Any, cleanup: list[tuple[str, dict[str, Any]]]
) -> None:
    page = await pages.signed_in("admin", "admin")
    await page.goto("/ui/#/agents")
    agents = page.get_by_role("region", name="Agents")
    await agents.get_by_label("Agent name").fill("uibot")
    await agents.get_by_role("button", name="Add agent").click()
    await expect(agents.get_by_role("status")).to_have_text(
        "Added agent uibot; start it from the list."
    )
    stored = await admin.call("query", collectionname="agents", query={"slug": "uibot"})
    agent_id = stored["result"][0]["_id"]
    cleanup.append(("deleteagent", {"agentid": agent_id}))
    row = agents.get_by_role("row").filter(has_text="uibot")
    await expect(row.locator(".state")).to_have_text("not created")
    await row.get_by_role("button", name="Start uibot", exact=True).click()
    await expect(row.locator(".state")).to_have_text("running", timeout=STARTUP_MS)
    await expect(row.get_by_role("link", name="Open the editor of uibot")).to_be_visible()
    await row.get_by_role("button", name="Log of uibot").click()
    await expect(agents.get_by_label("Log of agent uibot")).to_contain_text("Server now running")
    await expect(row.get_by_role("button", name="Start uibot", exact=True)).to_have_count(0)
    await row.get_by_role("button", name="Stop uibot").click()
    await expect(row.locator(".state")).to_have_text("stopped", timeout=STARTUP_MS)
    await expect(row.get_by_role("button", name="Start uibot", exact=True)).to_be_visible()

    # another user: neither the admin's agent nor the admin's instance
    await make_user("nrbob")
    bob = await pages.signed_in("nrbob", "secret")
    await bob.goto("/ui/#/agents")
    await expect(bob.get_by_role("region", name="Agents").locator("caption")).to_have_text(
        "0 agents you may read"
    )
    await expect(bob.get_by_text("uibot")).to_have_count(0)
    await expect(instance_box(bob)).to_contain_text("There is no Node-RED instance yet.")
    # creating one needs a role bob lacks: the server's words
    await instance_box(bob).get_by_role("button", name="Create and start").click()
    await expect(instance_box(bob).get_by_role("alert")).to_have_text(
        "ensurenoderedinstance needs membership of 'admins' or 'personal nodered users'"
    )
    admin_id = admin.user["_id"]
    await bob.goto(f"/ui/#/agents?user={admin_id}")
    await expect(bob.get_by_role("alert")).to_have_text(
        f"getnoderedinstance: you need update right on user {admin_id}"
    )

    # the admin may look after bob's instance
    await page.get_by_text("Manage another user's Node-RED instance").click()
    await page.get_by_label("Find user").fill("nrbob")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("button", name="Add nrbob (user)").click()
    other = page.get_by_role("region", name="Node-RED instance of nrbob")
    await expect(other).to_contain_text("There is no Node-RED instance yet.")
    await page.get_by_role("link", name="← Your own instance").click()

    agents = page.get_by_role("region", name="Agents")
    row = agents.get_by_role("row").filter(has_text="uibot")
    await row.get_by_role("button", name="Delete uibot").click()  # confirm accepted
    await expect(agents.get_by_role("row").filter(has_text="uibot")).to_have_count(0)
    assert (await admin.call("count", collectionname="agents", query={}))["result"] == 0


@pytest.mark.parametrize("config_overrides", [{}])
async def test_no_runtime_is_shown_in_the_servers_words(pages: Pages) -> None:
    page = await pages.signed_in("admin", "admin")
    await page.goto("/ui/#/agents")
    await expect(instance_box(page).get_by_role("alert")).to_contain_text(
        "no agent runtime is configured"
    )


@pytest.mark.parametrize("config_overrides", [{}])
@pytest.mark.parametrize("url", ["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,x"])
async def test_only_http_urls_become_editor_links(pages: Pages, url: str) -> None:
    # The instance's url comes from the server; a runtime that reported a javascript: or data:
    # url must not give a clickable link. The websocket answers getnoderedinstance itself.
    page = await pages.signed_in("admin", "admin")

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("command") != "getnoderedinstance":
                server.send(message)
                return
            result = {"name": "admin", "state": "running", "url": url}
            reply = {"id": "x1", "replyto": frame["id"], "command": frame["command"]}
            ws.send(json.dumps({**reply, "data": json.dumps({"result": result})}))

        ws.on_message(from_page)

    await page.context.route_web_socket(re.compile(".*"), route)
    await page.reload()
    await page.goto("/ui/#/agents")
    box = instance_box(page)
    await expect(box.locator("dl.summary .state")).to_have_text("running")
    await expect(box).to_contain_text(url.strip())
    await expect(box.get_by_role("link")).to_have_count(0)
