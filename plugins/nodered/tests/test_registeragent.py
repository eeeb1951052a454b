"""``customcommand registeragent`` (OpenFlow 1.5 agent self-registration) through the JSON
websocket API on a real server: a new agent, the same machine registering again, and the
rights rules — a user cannot overwrite another user's agent, needs Update right on an agent it
can only read, and needs Invoke right on a user to register an agent that runs as them; the
token for that user is real. Registrations are audited. Also: two plugins claiming one
sub-command name stop startup."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from iapflow import hookimpl
from iapflow.builtin.agents.commands import registeragent
from iapflow.errors import StartupError
from iapflow.plugins import Plugins
from iapflow.secure.acl import INVOKE, READ
from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server

_names = itertools.count(1)
MakeUser = Callable[[], Awaitable[JsonClient]]


@pytest.fixture
async def server(tmp_path: Path, mongo_storage: dict[str, Any]) -> AsyncIterator[str]:
    config = make_test_config(tmp_path, mongo_storage, agents={"runtime": "stub"})
    async with running_server(config) as base:
        yield base + "/ws"


@pytest.fixture
async def clients(server: str) -> AsyncIterator[Callable[[], Awaitable[JsonClient]]]:
    async with AsyncExitStack() as stack:

        async def connect() -> JsonClient:
            return await stack.enter_async_context(JsonClient(server))

        yield connect


@pytest.fixture
async def admin(clients: Callable[[], Awaitable[JsonClient]]) -> JsonClient:
    client = await clients()
    await client.signin("admin", "admin")
    return client


@pytest.fixture
def make_user(admin: JsonClient, clients: Callable[[], Awaitable[JsonClient]]) -> MakeUser:
    async def create() -> JsonClient:
        name = f"agentuser{next(_names)}"
        await admin.call(
            "insertone",
            collectionname="users",
            item={"_type": "user", "username": name, "name": name, "newpassword": "pw"},
        )
        client = await clients()
        await client.signin(name, "pw")
        return client

    return create


async def register(client: JsonClient, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    # OpenFlow clients send data as a JSON string
    reply = await client.call(
        "customcommand", command="registeragent", data=json.dumps(data), **extra
    )
    result: dict[str, Any] = reply["result"]
    return result


MACHINE = {"hostname": "robot-01", "username": "svc", "os": "linux", "arch": "x64"}


async def test_an_agent_registers_itself_and_finds_itself_again(
    make_user: MakeUser, admin: JsonClient
) -> None:
    alice = await make_user()
    agent = await register(alice, {**MACHINE, "version": "1.0", "daemon": True})
    assert agent["_type"] == "agent"
    assert agent["name"] == "robot-01 / svc"
    assert agent["runas"] == alice.user["_id"]
    assert agent["runasname"] == alice.user["name"]
    assert len(agent["slug"]) == 26 and agent["slug"].isalnum()
    assert "jwt" not in agent  # runs as the caller: no token handed out
    [stored] = (await alice.call("query", collectionname="agents", query={"_id": agent["_id"]}))[
        "result"
    ]
    assert stored["os"] == "linux" and stored["daemon"] is True and stored["lastseen"]

    # the same machine again, without an id: the same document, only reported fields change
    again = await register(
        alice, {**MACHINE, "version": "1.1", "image": "evil/image", "runas": "someone"}
    )
    assert again["_id"] == agent["_id"]
    assert again["version"] == "1.1"
    assert again["slug"] == agent["slug"]
    assert "image" not in again and again["runas"] == alice.user["_id"]
    assert again["lastseen"] >= stored["lastseen"]
    assert (await alice.call("count", collectionname="agents", query={}))["result"] == 1

    audit = (
        await admin.call(
            "query",
            collectionname="audit",
            query={"name": "registeragent", "agentid": agent["_id"]},
            orderby={"_created": 1},
        )
    )["result"]
    assert [entry["created"] for entry in audit] == [True, False]
    assert {entry["userid"] for entry in audit} == {alice.user["_id"]}


async def test_a_user_cannot_overwrite_another_users_agent(make_user: MakeUser) -> None:
    alice = await make_user()
    mallory = await make_user()
    agent = await register(alice, MACHINE)
    with pytest.raises(ReplyError, match=f"you cannot update agent {agent['_id']}"):
        await register(mallory, {**MACHINE, "version": "6.6.6"}, id=agent["_id"])
    with pytest.raises(ReplyError, match="you cannot update agent"):
        await register(mallory, {**MACHINE, "_id": agent["_id"], "version": "6.6.6"})
    # the same hostname and username without an id: mallory gets an agent of her own
    own = await register(mallory, {**MACHINE, "version": "6.6.6"})
    assert own["_id"] != agent["_id"] and own["runas"] == mallory.user["_id"]
    [kept] = (await alice.call("query", collectionname="agents", query={}))["result"]
    assert "version" not in kept and kept["_id"] == agent["_id"]


async def test_reading_an_agent_is_not_enough_to_update_it(make_user: MakeUser) -> None:
    alice = await make_user()
    bob = await make_user()
    agent = await register(alice, MACHINE)
    [doc] = (await alice.call("query", collectionname="agents", query={}))["result"]
    doc["_acl"].append({"_id": bob.user["_id"], "name": bob.user["name"], "rights": READ})
    await alice.call("updateone", collectionname="agents", item=doc)  # a full update sets _acl
    assert (await bob.call("count", collectionname="agents", query={}))["result"] == 1
    with pytest.raises(ReplyError, match="you need update right on agent robot-01 / svc"):
        await register(bob, {**MACHINE, "version": "2"}, id=agent["_id"])
    with pytest.raises(ReplyError, match="you need update right"):
        await register(bob, {**MACHINE, "version": "2"})  # found by hostname and username


async def test_running_as_another_user_needs_invoke_and_returns_their_token(
    make_user: MakeUser, admin: JsonClient, clients: Callable[[], Awaitable[JsonClient]]
) -> None:
    alice = await make_user()

    async def robot(rights: int | None) -> str:
        name = f"robot{next(_names)}"
        item: dict[str, Any] = {"_type": "user", "username": name, "name": name}
        if rights is not None:
            item["_acl"] = [
                {"_id": alice.user["_id"], "name": alice.user["name"], "rights": rights}
            ]
        reply = await admin.call("insertone", collectionname="users", item=item)
        return str(reply["result"]["_id"])

    hidden, readable, invokable = await robot(None), await robot(READ), await robot(READ | INVOKE)
    with pytest.raises(ReplyError, match="access denied to runas user"):
        await register(alice, {**MACHINE, "runas": hidden})
    with pytest.raises(ReplyError, match="you need invoke right on user robot"):
        await register(alice, {**MACHINE, "runas": readable})
    assert (await alice.call("count", collectionname="agents", query={}))["result"] == 0

    agent = await register(alice, {**MACHINE, "runas": invokable})
    assert agent["runas"] == invokable
    assert agent["runasname"].startswith("robot")
    as_robot = await clients()
    signed = await as_robot.signin(jwt=agent["jwt"])
    assert signed["user"]["_id"] == invokable
    stored = (await alice.call("query", collectionname="agents", query={}))["result"][0]
    assert "jwt" not in stored


async def test_bad_registrations_get_clear_errors(make_user: MakeUser, admin: JsonClient) -> None:
    alice = await make_user()
    for data, message in [
        (None, "registeragent needs data"),
        ("{not json", "data is not JSON"),
        ("[1, 2]", "registeragent needs data"),
        (json.dumps({"hostname": 5}), "hostname must be a string"),
        (json.dumps({**MACHINE, "username": {"$ne": None}}), "username must be a string"),
        (json.dumps({**MACHINE, "slug": "../../"}), "must give an instance name"),
        (json.dumps({**MACHINE, "slug": "!!!"}), "must give an instance name"),
        (json.dumps({**MACHINE, "slug": "a" * 64}), "must give an instance name"),
        (json.dumps({**MACHINE, "os": {"$gt": ""}}), "os must be a string"),
        (json.dumps({**MACHINE, "languages": ["en", {"$x": 1}]}), "languages must be"),
    ]:
        with pytest.raises(ReplyError, match=message):
            await alice.call("customcommand", command="registeragent", data=data)
    with pytest.raises(ReplyError, match="id must be the agent's _id"):
        await alice.call("customcommand", command="registeragent", data=MACHINE, id=5)
    with pytest.raises(ReplyError, match="id must be the agent's _id"):
        await alice.call("customcommand", command="registeragent", data=MACHINE, id={"$ne": ""})
    # an agent that exists is not changed by a refused registration either
    agent = await register(alice, {**MACHINE, "slug": "../Robot-01"})
    with pytest.raises(ReplyError, match="os must be a string"):
        await register(alice, {**MACHINE, "os": {"$gt": ""}})
    [stored] = (await alice.call("query", collectionname="agents", query={}))["result"]
    assert stored["os"] == "linux" and stored["lastseen"] == agent["lastseen"]
    await alice.call("deleteone", collectionname="agents", id=agent["_id"])
    workitem = await alice.call(
        "insertone", collectionname="agents", item={"_type": "package", "name": "p"}
    )
    with pytest.raises(ReplyError, match="is not an agent"):
        await register(alice, MACHINE, id=workitem["result"]["_id"])
    with pytest.raises(ReplyError, match=r"unknown customcommand 'nosuch'.*registeragent"):
        await alice.call("customcommand", command="nosuch")
    # the core's own sub-commands stay admin-only next to the plugin's
    with pytest.raises(ReplyError, match="admins only"):
        await alice.call("customcommand", command="getclients")
    assert isinstance((await admin.call("customcommand", command="getclients"))["result"], list)


class _Claims:
    """A plugin registering one customcommand sub-command."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def register_customcommands(self, register: Callable[[str, Any], None]) -> None:
        register(self.name, registeragent)


def test_two_plugins_claiming_one_sub_command_stop_startup() -> None:
    plugins = Plugins(load_entry_points=False)
    plugins.register(_Claims("enrolrobot"), name="one")
    assert {"enrolrobot", "registeragent", "getclients"} <= set(plugins.customcommands().names())
    plugins.register(_Claims("enrolrobot"), name="two")
    with pytest.raises(
        StartupError, match="customcommand sub-command 'enrolrobot' is registered by both"
    ):
        plugins.customcommands()
    builtin = Plugins(load_entry_points=False)
    builtin.register(_Claims("registeragent"), name="three")
    with pytest.raises(StartupError, match=r"both 'three' and 'iapflow\.builtin\.agents'"):
        builtin.customcommands()
