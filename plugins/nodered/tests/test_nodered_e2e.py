"""End to end on the real Node-RED 4.1 with node-red-iapflow, through the API only: a user's
instance is created with ``ensurenoderedinstance``; a flow deployed through Node-RED's Admin
API with the user's iapflow token inserts a document the user then finds with ``query``, and
answers a queue request sent by a websocket client; the flows live in the ``nodered``
collection, survive a stop and start, and follow an edit made there by someone else; bad
tokens and users without a Node-RED role are refused by the Admin API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodered_site import V2, Site, running

from iapflow import wellknown
from iapflow.testing import JsonClient, make_test_config, running_server

pytestmark = pytest.mark.slow


@pytest.fixture
async def site(
    tmp_path: Path, mongo_storage: dict[str, Any], node_red_dir: Path
) -> AsyncIterator[Site]:
    agents = {"runtime": "process", "install_dir": str(node_red_dir), "base_port": 19100}
    config = make_test_config(tmp_path, mongo_storage, agents=agents)
    async with AsyncExitStack() as stack:
        base = await stack.enter_async_context(running_server(config))
        yield Site(stack, base)


def _flows(marker: str, queue: str) -> list[dict[str, Any]]:
    return [
        {"id": "tab1", "type": "tab", "label": "e2e"},
        {
            "id": "inject1",
            "type": "inject",
            "z": "tab1",
            "props": [{"p": "payload"}],
            "once": True,
            "onceDelay": 0.1,
            "repeat": "",
            "topic": "",
            "payload": json.dumps({"_type": "nodered-e2e", "marker": marker}),
            "payloadType": "json",
            "wires": [["add1"]],
        },
        {"id": "add1", "type": "api add", "z": "tab1", "collection": "entities", "wires": [[]]},
        {"id": "qin1", "type": "queue in", "z": "tab1", "queue": queue, "wires": [["double1"]]},
        {
            "id": "double1",
            "type": "function",
            "z": "tab1",
            "func": "msg.payload = {answer: msg.payload.n * 2, by: msg.user.username};"
            "\nreturn msg;",
            "outputs": 1,
            "wires": [["qout1"]],
        },
        {"id": "qout1", "type": "queue out", "z": "tab1", "queue": "", "wires": [[]]},
        {  # a config node with credentials, which Node-RED stores encrypted
            "id": "broker1",
            "type": "mqtt-broker",
            "name": "e2e",
            "broker": "127.0.0.1",
            "port": "1883",
            "credentials": {"user": "e2e-user", "password": "e2e-password"},
        },
    ]


async def _ask(client: JsonClient, queue: str, n: int) -> dict[str, Any]:
    """Send {n} to ``queue`` and wait for the answer; retry while Node-RED has not registered
    the queue yet (the server answers such a request with a ``timeout``)."""
    replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_push(command: str, data: dict[str, Any], push_id: str) -> None:
        await client.answer(push_id, "queuemessage")
        if command == "queuemessage":
            replies.put_nowait(data)

    client.on_push = on_push
    inbox = (await client.call("registerqueue", queuename=""))["queuename"]
    for attempt in range(100):
        correlation = f"c{attempt}"
        await client.call(
            "queuemessage",
            queuename=queue,
            data={"n": n},
            replyto=inbox,
            correlationId=correlation,
            expiration=2000,
        )
        reply = await asyncio.wait_for(replies.get(), 30)
        assert reply["correlationId"] == correlation
        if reply["data"].get("command") != "timeout":
            return dict(reply["data"])
        await asyncio.sleep(0.2)
    raise AssertionError(f"nobody answered on {queue}")


async def test_a_flow_deployed_with_an_iapflow_token_uses_the_api_and_queues(
    site: Site, tmp_path: Path
) -> None:
    admin = await site.client()
    await admin.signin("admin", "admin")
    alice = await site.user(admin, wellknown.PERSONAL_NODERED_USERS)
    stranger = await site.user(admin)
    await alice.call("ensurenoderedinstance")
    pod = await running(alice)
    base = pod["url"].rstrip("/")
    auth = {"Authorization": f"Bearer {alice.jwt}", **V2}
    marker, queue = uuid.uuid4().hex, f"nrq{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=30) as http:
        # The Admin API refuses no token, a bad token and a user with no Node-RED role.
        assert (await http.get(base + "/flows", headers=V2)).status_code == 401
        bad = {"Authorization": "Bearer not-a-token", **V2}
        assert (await http.get(base + "/flows", headers=bad)).status_code == 401
        forged = {"Authorization": f"Bearer {alice.jwt[:-4]}AAAA", **V2}
        assert (
            await http.post(base + "/flows", headers=forged, json={"flows": []})
        ).status_code == 401
        other = {"Authorization": f"Bearer {stranger.jwt}", **V2}
        assert (await http.get(base + "/flows", headers=other)).status_code == 401

        settings = (await http.get(base + "/settings", headers=auth)).json()
        assert settings["user"]["username"] == alice.user["username"]
        assert settings["user"]["permissions"] == "*"
        deploy = {**auth, "Node-RED-Deployment-Type": "full"}
        reply = await http.post(
            base + "/flows", headers=deploy, json={"flows": _flows(marker, queue)}
        )
        assert reply.status_code == 200, reply.text

        # inject (once) -> api add: the document is the user's.
        found: list[dict[str, Any]] = []
        for _ in range(300):
            found = (
                await alice.call("query", collectionname="entities", query={"marker": marker})
            )["result"]
            if found:
                break
            await asyncio.sleep(0.1)
        assert len(found) == 1
        assert found[0]["_createdby"] == alice.user["username"]

        # queue in -> function -> queue out answers a websocket client's request.
        asker = await site.client()
        await asker.signin("admin", "admin")
        answer = await _ask(asker, queue, 21)
        assert answer["answer"] == 42
        assert answer["by"] == "admin"

        # The flows are in the nodered collection, not in the instance's folder.
        stored = (
            await alice.call(
                "query",
                collectionname="nodered",
                query={"_type": "flow", "nodered_id": pod["name"]},
            )
        )["result"]
        assert len(stored) == 1
        assert {n["id"] for n in json.loads(stored[0]["flows"])} >= {"inject1", "qin1", "qout1"}
        assert stored[0]["deployedby"] == alice.user["username"]
        userdir = tmp_path / "nodered" / "instances" / pod["name"] / "home" / "userdir"
        assert not (userdir / "flows.json").exists()

        # Someone else edits the flows in the collection: the instance reloads them.
        edited = [*json.loads(stored[0]["flows"]), {"id": "note1", "type": "comment", "z": "tab1"}]
        await admin.call(
            "updateone",
            collectionname="nodered",
            item={**stored[0], "flows": json.dumps(edited)},
        )
        ids: set[str] = set()
        for _ in range(300):
            ids = {n["id"] for n in (await http.get(base + "/flows", headers=auth)).json()["flows"]}
            if "note1" in ids:
                break
            await asyncio.sleep(0.1)
        assert "note1" in ids

        # Stop and start: the flows come back from the collection and work again.
        await alice.call("stopnoderedinstance")
        await alice.call("startnoderedinstance")
        pod = await running(alice)
        again = (await http.get(base + "/flows", headers=auth)).json()["flows"]
        assert {"inject1", "qin1", "qout1", "note1"} <= {n["id"] for n in again}
        assert (await _ask(asker, queue, 5))["answer"] == 10

        # Deleting the instance removes its folder; the flows stay in the collection, so a new
        # instance of the same user starts with them (as in OpenFlow).
        assert (await alice.call("deletenoderedinstance"))["result"] is True
        assert not userdir.parent.parent.exists()
        await alice.call("ensurenoderedinstance")
        pod = await running(alice)
        renewed = (await http.get(pod["url"] + "flows", headers=auth)).json()["flows"]
        assert {"inject1", "qin1", "qout1", "note1"} <= {n["id"] for n in renewed}
        # The server gives the new instance the same credential key, so the encrypted
        # credentials kept in the collection still open.
        kept = await http.get(pod["url"] + "credentials/mqtt-broker/broker1", headers=auth)
        assert kept.json() == {"user": "e2e-user", "has_password": True}
    assert (await alice.call("deletenoderedinstance"))["result"] is True


async def test_after_a_server_restart_the_adopted_instance_signs_in_again_and_answers(
    tmp_path: Path, mongo_storage: dict[str, Any], node_red_dir: Path
) -> None:
    agents = {"runtime": "process", "install_dir": str(node_red_dir), "base_port": 19150}
    config = make_test_config(tmp_path, mongo_storage, agents=agents)
    queue = f"nrq{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        site = Site(stack, await stack.enter_async_context(running_server(config)))
        admin = await site.client()
        await admin.signin("admin", "admin")
        alice = await site.user(admin, wellknown.PERSONAL_NODERED_USERS)
        await alice.call("ensurenoderedinstance")
        pod = await running(alice)
        deploy = {"Authorization": f"Bearer {alice.jwt}", "Node-RED-Deployment-Type": "full", **V2}
        async with httpx.AsyncClient(timeout=30) as http:
            flows = _flows(uuid.uuid4().hex, queue)
            reply = await http.post(pod["url"] + "flows", headers=deploy, json={"flows": flows})
            assert reply.status_code == 200, reply.text
        assert (await _ask(admin, queue, 1))["answer"] == 2
    # The same server (same port) comes back; the instance was left running and reconnects.
    async with AsyncExitStack() as stack:
        site = Site(stack, await stack.enter_async_context(running_server(config)))
        admin = await site.client()
        await admin.signin("admin", "admin")
        again = (await admin.call("getnoderedinstance", _id=alice.user["_id"]))["result"]
        assert again["pid"] == pod["pid"] and again["state"] == "running"
        assert (await _ask(admin, queue, 8))["answer"] == 16
        assert (await admin.call("deletenoderedinstance", _id=alice.user["_id"]))["result"]
