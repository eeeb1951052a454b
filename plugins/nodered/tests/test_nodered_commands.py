"""The per-user Node-RED commands (OpenFlow 1.4) and the agent commands (1.5) through the JSON
websocket API: OpenFlow's rights rules and audit on the stub runtime, a clear error with no
runtime configured, and on the real Node-RED an instance that outlives an iapflow server
restart and is adopted by the next server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from iapflow import wellknown
from iapflow.secure.acl import READ
from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server
from iapflow_nodered.instances import pid_alive

_names = itertools.count(1)
Connect = Callable[[], Awaitable[JsonClient]]


async def _serve(
    stack: AsyncExitStack, tmp_path: Path, mongo_storage: dict[str, Any], **sections: Any
) -> Connect:
    config = make_test_config(tmp_path, mongo_storage, **sections)
    base = await stack.enter_async_context(running_server(config))

    async def connect() -> JsonClient:
        client = await stack.enter_async_context(JsonClient(base + "/ws"))
        return client

    return connect


async def _admin(connect: Connect) -> JsonClient:
    client = await connect()
    await client.signin("admin", "admin")
    return client


async def _user(connect: Connect, admin: JsonClient, nodered: bool = True) -> JsonClient:
    name = f"nruser{next(_names)}"
    reply = await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": name, "name": name, "newpassword": "pw"},
    )
    if nodered:
        await admin.call(
            "updateone",
            collectionname="users",
            query={"_id": wellknown.PERSONAL_NODERED_USERS},
            item={"$push": {"members": {"_id": reply["result"]["_id"], "name": name}}},
        )
    client = await connect()
    await client.signin(name, "pw")
    return client


def _instance_folder(data_dir: Path, name: str) -> str:
    return str(data_dir.absolute() / "nodered" / "instances" / name)


def _exists(path: str) -> bool:
    return Path(path).exists()


@pytest.fixture
async def stub_server(tmp_path: Path, mongo_storage: dict[str, Any]) -> AsyncIterator[Connect]:
    async with AsyncExitStack() as stack:
        yield await _serve(stack, tmp_path, mongo_storage, agents={"runtime": "stub"})


async def test_no_runtime_configured_is_a_clear_error(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    async with AsyncExitStack() as stack:
        connect = await _serve(stack, tmp_path, mongo_storage)
        admin = await _admin(connect)
        with pytest.raises(ReplyError, match=r"no agent runtime is configured.*\[agents\]"):
            await admin.call("ensurenoderedinstance")
        assert (await admin.call("getkubenodelabels"))["result"] is None


async def test_a_user_manages_their_own_instance(stub_server: Connect) -> None:
    admin = await _admin(stub_server)
    alice = await _user(stub_server, admin)
    name = alice.user["username"]
    started = await alice.call("ensurenoderedinstance")
    assert started["result"]["name"] == name
    assert started["result"]["owner"] == alice.user["_id"]
    got = await alice.call("getnoderedinstance")
    assert [pod["metadata"]["name"] for pod in got["results"]] == [name]
    assert got["results"][0]["state"] == "running"
    assert "Started flows" in (await alice.call("getnoderedinstancelog"))["result"]
    stopped = await alice.call("stopnoderedinstance")
    assert stopped["result"]["state"] == "stopped"
    assert (await alice.call("startnoderedinstance"))["result"]["state"] == "running"
    assert (await alice.call("restartnoderedinstance"))["result"]["restarts"] == 1
    assert (await alice.call("deletenoderedpod", instancename=name))["result"]["name"] == name
    assert (await alice.call("deletenoderedinstance"))["result"] is True
    assert (await alice.call("getnoderedinstance"))["results"] == []
    audit = await admin.call(
        "query", collectionname="audit", query={"_type": "nodered", "userid": alice.user["_id"]}
    )
    actions = {entry["name"] for entry in audit["result"]}
    assert {"ensureinstance", "stopinstance", "restartinstance", "deleteinstance"} <= actions
    assert {entry["instancename"] for entry in audit["result"]} == {name}


async def test_creating_an_instance_needs_the_personal_nodered_users_role(
    stub_server: Connect,
) -> None:
    admin = await _admin(stub_server)
    carol = await _user(stub_server, admin, nodered=False)
    with pytest.raises(ReplyError, match="personal nodered users"):
        await carol.call("ensurenoderedinstance")
    # An admin may create it for her.
    await admin.call("ensurenoderedinstance", _id=carol.user["_id"])
    assert len((await carol.call("getnoderedinstance"))["results"]) == 1


async def test_a_user_cannot_touch_another_users_instance(stub_server: Connect) -> None:
    admin = await _admin(stub_server)
    alice = await _user(stub_server, admin)
    bob = await _user(stub_server, admin)
    await alice.call("ensurenoderedinstance")
    alice_id = alice.user["_id"]
    for command in (
        "startnoderedinstance",
        "ensurenoderedinstance",
        "restartnoderedinstance",
        "stopnoderedinstance",
        "getnoderedinstancelog",
        "getnoderedinstance",
        "deletenoderedinstance",
        "deletenoderedpod",
    ):
        with pytest.raises(ReplyError, match="update right"):
            await bob.call(command, _id=alice_id)
    assert (await alice.call("getnoderedinstance"))["results"][0]["state"] == "running"
    # Admins may.
    assert "Started flows" in (await admin.call("getnoderedinstancelog", _id=alice_id))["result"]
    assert (await admin.call("deletenoderedinstance", _id=alice_id))["result"] is True


async def test_unknown_user_and_bad_arguments(stub_server: Connect) -> None:
    admin = await _admin(stub_server)
    with pytest.raises(ReplyError, match="not found"):
        await admin.call("getnoderedinstance", _id="000000000000000000000000")
    with pytest.raises(ReplyError, match="lines"):
        await admin.call("getnoderedinstancelog", lines="all")
    with pytest.raises(ReplyError, match="no Node-RED instance"):
        await admin.call("stopnoderedinstance")


@pytest.mark.slow
async def test_real_node_red_survives_a_server_restart_and_is_adopted(
    tmp_path: Path, mongo_storage: dict[str, Any], node_red_dir: Path
) -> None:
    agents = {"runtime": "process", "install_dir": str(node_red_dir), "base_port": 18900}
    async with AsyncExitStack() as stack:
        connect = await _serve(stack, tmp_path, mongo_storage, agents=agents)
        admin = await _admin(connect)
        alice = await _user(connect, admin)
        await alice.call("ensurenoderedinstance")
        pod: dict[str, Any] = {}
        for _ in range(600):
            pod = (await alice.call("getnoderedinstance"))["result"]
            if pod["state"] == "running":
                break
            await asyncio.sleep(0.1)
        assert pod["state"] == "running", pod
        async with httpx.AsyncClient() as http:
            assert (await http.get(pod["url"])).status_code == 200
        folder = _instance_folder(tmp_path, pod["name"])
    # The server is gone; the instance is not.
    assert pid_alive(pod["pid"], folder)
    async with AsyncExitStack() as stack:
        connect = await _serve(stack, tmp_path, mongo_storage, agents=agents)
        admin = await _admin(connect)
        again = (await admin.call("getnoderedinstance", _id=alice.user["_id"]))["result"]
        assert again["pid"] == pod["pid"]
        assert again["state"] == "running"
        assert (await admin.call("deletenoderedinstance", _id=alice.user["_id"]))["result"]
    assert not pid_alive(pod["pid"], folder)
    assert not _exists(folder)


# -- the 1.5 agent commands ----------------------------------------------------------------


async def _agent(client: JsonClient, slug: str, **fields: Any) -> dict[str, Any]:
    item = {"_type": "agent", "name": slug, "slug": slug, **fields}
    reply = await client.call("insertone", collectionname="agents", item=item)
    return dict(reply["result"])


async def test_the_agent_set_on_an_agent_the_user_created(stub_server: Connect) -> None:
    admin = await _admin(stub_server)
    alice = await _user(stub_server, admin, nodered=False)
    agent = await _agent(alice, "alicebot", image="openiap/nodered", environment={"A": "1"})
    started = (await alice.call("startagent", agentid=agent["_id"]))["result"]
    assert started["name"] == "alicebot" and started["state"] == "running"
    pods = (await alice.call("getagentpods", agentid=agent["_id"]))["results"]
    assert [p["name"] for p in pods] == ["alicebot"]
    assert "Started flows" in (await alice.call("getagentlog", agentid=agent["_id"]))["result"]
    stopped = (await alice.call("stopagent", agentid=agent["_id"]))["result"]
    assert stopped["state"] == "stopped"
    again = (await alice.call("deleteagentpod", agentid=agent["_id"]))["result"]
    assert again["state"] == "running"
    assert (await alice.call("deleteagent", agentid=agent["_id"]))["result"] is True
    found = await alice.call("query", collectionname="agents", query={"_id": agent["_id"]})
    assert found["result"] == []
    audit = await admin.call(
        "query", collectionname="audit", query={"_type": "nodered", "agentid": agent["_id"]}
    )
    assert {"startagent", "stopagent", "deleteagentpod", "deleteagent"} <= {
        entry["name"] for entry in audit["result"]
    }


async def test_another_user_needs_invoke_right(stub_server: Connect) -> None:
    admin = await _admin(stub_server)
    alice = await _user(stub_server, admin, nodered=False)
    bob = await _user(stub_server, admin, nodered=False)
    agent = await _agent(alice, "alicebot2", image="openiap/nodered")
    await alice.call("startagent", agentid=agent["_id"])
    with pytest.raises(ReplyError, match="not found"):
        await bob.call("getagentlog", agentid=agent["_id"])
    acl = [*agent["_acl"], {"_id": bob.user["_id"], "name": "bob", "rights": READ}]
    await alice.call("updateone", collectionname="agents", item={**agent, "_acl": acl})
    for command in ("startagent", "stopagent", "getagentlog", "deleteagentpod", "deleteagent"):
        with pytest.raises(ReplyError, match="invoke right"):
            await bob.call(command, agentid=agent["_id"])
    assert (await alice.call("getagentpods", agentid=agent["_id"]))["results"][0]["state"] == (
        "running"
    )


async def test_an_agent_without_image_runs_elsewhere(stub_server: Connect) -> None:
    admin = await _admin(stub_server)
    daemon = await _agent(admin, "daemonbox")
    assert (await admin.call("startagent", agentid=daemon["_id"]))["result"] is None
    assert (await admin.call("getagentpods", agentid=daemon["_id"]))["results"] == []
    assert (await admin.call("stopagent", agentid=daemon["_id"]))["result"] is None
    with pytest.raises(ReplyError, match="agentid is required"):
        await admin.call("startagent")


async def test_an_agent_cannot_take_over_another_users_instance(stub_server: Connect) -> None:
    # Instance names are slugs reduced to [a-z0-9]: an agent whose slug names someone else's
    # instance ("../<name>", "<NAME>") must not start, stop, restart, read or delete it.
    admin = await _admin(stub_server)
    alice = await _user(stub_server, admin)
    bob = await _user(stub_server, admin, nodered=False)
    victim = (await alice.call("ensurenoderedinstance"))["result"]["name"]
    for slug in (victim, f"../{victim}", victim.upper()):
        agent = await _agent(bob, slug, image="openiap/nodered")
        for command in (
            "startagent",
            "stopagent",
            "getagentpods",
            "getagentlog",
            "deleteagentpod",
            "deleteagent",
        ):
            with pytest.raises(ReplyError, match=r"belongs to another|own Node-RED"):
                await bob.call(command, agentid=agent["_id"])
    mine = (await alice.call("getnoderedinstance"))["result"]
    assert mine["state"] == "running" and mine["owner"] == alice.user["_id"]


async def test_runas_set_on_a_document_needs_invoke_right_on_that_user(
    stub_server: Connect,
) -> None:
    # runas is an ordinary field: an agent bob writes with alice's id must not start as alice
    # (the instance would get a token for her).
    admin = await _admin(stub_server)
    alice = await _user(stub_server, admin, nodered=False)
    bob = await _user(stub_server, admin, nodered=False)
    agent = await _agent(bob, "bobbot", image="openiap/nodered", runas=alice.user["_id"])
    for command in ("startagent", "getagentpods"):
        with pytest.raises(ReplyError, match="access denied to runas user"):
            await bob.call(command, agentid=agent["_id"])
    # admin has Invoke on every user: an agent admin writes for alice starts as alice
    mine = await _agent(admin, "foralice", image="openiap/nodered", runas=alice.user["_id"])
    started = (await admin.call("startagent", agentid=mine["_id"]))["result"]
    assert started["owner"] == alice.user["_id"]
    await admin.call("deleteagent", agentid=mine["_id"])


async def test_an_agent_cannot_squat_a_users_instance_name(stub_server: Connect) -> None:
    # "carol" and bob's agent with slug "Carol" reduce to one instance name: it is carol's own
    # Node-RED's, even before she has one, so bob's agent may not take it.
    admin = await _admin(stub_server)
    bob = await _user(stub_server, admin, nodered=False)
    carol = await _user(stub_server, admin)
    name = carol.user["username"]
    for slug in (name.upper(), f"-{name}-"):
        agent = await _agent(bob, slug, image="openiap/nodered")
        with pytest.raises(ReplyError, match=f"user {name}'s own Node-RED"):
            await bob.call("startagent", agentid=agent["_id"])
    with pytest.raises(ReplyError, match=f"user {name}'s own Node-RED"):
        await bob.call(
            "customcommand", command="registeragent",
            data={"hostname": "h", "username": "u", "slug": name.title()},
        )  # fmt: skip
    assert (await carol.call("ensurenoderedinstance"))["result"]["name"] == name
    mine = (await carol.call("getnoderedinstance"))["result"]
    assert mine["owner"] == carol.user["_id"]


async def test_an_agent_whose_slug_names_no_instance_gets_a_clear_error(
    stub_server: Connect,
) -> None:
    admin = await _admin(stub_server)
    for slug in ("!!!", "../..", "a" * 64):
        agent = await _agent(admin, slug, image="openiap/nodered")
        for command in ("startagent", "getagentpods", "getagentlog", "deleteagent"):
            with pytest.raises(ReplyError, match="must give an instance name of 1 to 63"):
                await admin.call(command, agentid=agent["_id"])
    assert (await admin.call("count", collectionname="agents", query={}))["result"] == 3
