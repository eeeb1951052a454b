"""Attacker goal: consume messages meant for someone else (and the tokens they carry).

On both brokers (in-process and RabbitMQ), with the attacker on the JSON websocket and on gRPC.
The first review took over a claimed queue by inserting a role whose ``_id`` was the queue's
name (a queue named like a principal is that principal's inbox), then received the owner's
messages with the senders' ``__jwt``; a variant locked the owner out of its own queue.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from attack import Client, Login, NewUser, operator_update, refused, uid

from iapflow.ids import name_id
from iapflow.testing import JsonClient, make_test_config, running_server

BACKENDS = {
    "memory": {"backend": "memory"},
    "rabbit": {"backend": "rabbit", "amqp_url": "amqp://guest:guest@127.0.0.1:5672/"},
}


@pytest.fixture(params=sorted(BACKENDS))
def config_overrides(request: pytest.FixtureRequest, grpc_port: int) -> dict[str, dict[str, Any]]:
    """Every test here runs on both brokers."""
    return {"grpc": {"port": grpc_port}, "messaging": dict(BACKENDS[request.param])}


def queue() -> str:
    return f"jobs-{uuid.uuid4().hex[:10]}"


async def received(client: Client, wait: float) -> list[dict[str, Any]]:
    """Queue messages pushed to ``client`` within ``wait`` seconds."""
    found: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + wait
    pushes = client.pushes
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            command, data = await asyncio.wait_for(pushes.get(), left)
        except TimeoutError:
            break
        if command in ("queuemessage", "queueevent"):
            found.append(data)
    return found


async def owner_consumes(
    client: JsonClient, name: str, sender: str = ""
) -> asyncio.Queue[dict[str, Any]]:
    """``client`` registers ``name``, lets ``sender`` (a user id) send to it as owners grant
    it with the UI, and answers every message; returns what it got."""
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_push(command: str, data: dict[str, Any], push_id: str) -> None:
        if command == "queuemessage":
            got.put_nowait(data)
            await client.answer(push_id, "queuemessage")

    client.on_push = on_push
    await client.call("registerqueue", queuename=name)
    claims = (await client.call("query", collectionname="mq", query={"name": name}))["result"]
    if claims and sender:  # an inbox has no claim
        claim = claims[0]
        acl = [*claim["_acl"], {"_id": sender, "name": "", "rights": 2}]
        await client.call("updateone", collectionname="mq", item={**claim, "_acl": acl})
    return got


@pytest.fixture
async def people(
    new_user: NewUser, login: Login, connect: Callable[..., Awaitable[JsonClient]]
) -> dict[str, Any]:
    """alice owns queues (JSON), bob attacks (the test's transport), carol sends (JSON)."""
    for name in ("alice", "bob", "carol"):
        await new_user(name)
    alice = await connect()
    await alice.signin("alice", "secret")
    carol = await connect()
    await carol.signin("carol", "secret")
    return {"alice": alice, "bob": await login("bob"), "carol": carol}


async def test_a_role_named_like_a_claimed_queue_cannot_take_it_or_its_tokens(
    people: dict[str, Any],
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    name = queue()
    inbox = await owner_consumes(alice, name, uid(carol))
    # the takeover: a role whose _id is the queue's name, with the attacker as member
    says = await refused(
        bob,
        "insertone",
        collectionname="users",
        item={"_type": "role", "_id": name, "name": f"r-{name}", "members": [{"_id": uid(bob)}]},
    )
    assert "server chooses the _id" in says
    assert "access denied" in await refused(bob, "registerqueue", queuename=name)
    await carol.call("queuemessage", queuename=name, data={"order": 1})
    got = await asyncio.wait_for(inbox.get(), 10)
    assert got["data"]["order"] == 1 and got["data"]["__jwt"]  # the owner gets it, token and all
    assert await received(bob, 0.5) == []


async def test_the_owner_cannot_be_locked_out_of_a_name_by_a_role_made_first(
    people: dict[str, Any],
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    name = queue()
    await refused(
        bob, "insertone", collectionname="users",
        item={"_type": "role", "_id": name, "name": f"r-{name}", "members": [{"_id": uid(bob)}]},
    )  # fmt: skip
    inbox = await owner_consumes(alice, name, uid(carol))
    await carol.call("queuemessage", queuename=name, data={"order": 2})
    assert (await asyncio.wait_for(inbox.get(), 10))["data"]["order"] == 2
    assert await received(bob, 0.3) == []


async def test_claims_cannot_be_forged_or_renamed_through_mq(people: dict[str, Any]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    name = queue()
    inbox = await owner_consumes(alice, name, uid(carol))
    for item in (
        {"_type": "queue", "name": name},  # a second claim of the name, under another _id
        {"_type": "queue", "name": name, "_id": name_id("queue", name)},
        {"_type": "exchange", "name": name},
    ):
        says = await refused(bob, "insertone", collectionname="mq", item=item)
        assert "register" in says
    # bob's own claim cannot be renamed onto alice's name, nor turned into another kind
    mine = queue()
    await bob.call("registerqueue", queuename=mine)
    found = await bob.call("query", collectionname="mq", query={"name": mine})
    claim = (found.get("result") or found.get("results"))[0]
    assert "cannot change" in await refused(
        bob, "updateone", collectionname="mq", item={**claim, "name": name}
    )
    assert "cannot change" in await refused(
        bob, "updateone", collectionname="mq", item={**claim, "_type": "exchange"}
    )
    assert "name" in await refused(
        bob,
        "updatedocument",
        **operator_update(bob, "mq", {"_id": claim["_id"]}, {"$set": {"name": name}}),
    )
    # a document of another kind cannot become a claim either
    other = await bob.call("insertone", collectionname="mq", item={"_type": "note", "name": name})
    note = other["result"]
    assert "cannot change" in await refused(
        bob, "updateone", collectionname="mq", item={**note, "_type": "queue"}
    )
    await carol.call("queuemessage", queuename=name, data={"order": 3})
    assert (await asyncio.wait_for(inbox.get(), 10))["data"]["order"] == 3
    assert await received(bob, 0.3) == []


async def test_another_users_inbox_is_not_consumable(
    people: dict[str, Any], admin: JsonClient
) -> None:
    alice, bob = people["alice"], people["bob"]
    inbox = await owner_consumes(alice, uid(alice))  # a user's inbox: its own id
    assert "access denied" in await refused(bob, "registerqueue", queuename=uid(alice))
    await admin.call("queuemessage", queuename=uid(alice), data={"to": "alice"})
    got = await asyncio.wait_for(inbox.get(), 10)
    assert got["data"]["to"] == "alice" and got["data"]["__user"]["_id"] == uid(admin)
    assert await received(bob, 0.3) == []


async def test_routing_headers_cannot_copy_a_message_into_another_users_queue(
    new_user: NewUser, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    # JSON only: the protobuf QueueMessage has no headers
    clients = []
    for name in (f"owner{uuid.uuid4().hex[:6]}", f"copier{uuid.uuid4().hex[:6]}"):
        await new_user(name)
        client = await connect()
        await client.signin(name, "secret")
        clients.append(client)
    alice, bob = clients
    private = queue()
    inbox = await owner_consumes(alice, private)  # alice lets nobody send to it
    mine = queue()
    await bob.call("registerqueue", queuename=mine)
    for header in ("CC", "BCC", "cc"):
        says = await refused(
            bob, "queuemessage", queuename=mine, data={"x": 1}, headers={header: [private]}
        )
        assert "not allowed" in says and header in says
    await asyncio.sleep(0.3)
    assert inbox.empty()


async def test_another_connections_temporary_exchange_cannot_be_claimed(
    people: dict[str, Any],
) -> None:
    alice, bob = people["alice"], people["bob"]
    temporary = (await alice.call("registerexchange", exchangename="", algorithm="fanout"))[
        "exchangename"
    ]
    says = await refused(bob, "registerexchange", exchangename=temporary, algorithm="fanout")
    assert "in use by another connection" in says
    # its owner still sends to it
    await alice.call("queuemessage", exchangename=temporary, data={"still": "mine"})


async def test_other_programs_on_a_shared_rabbitmq_stay_out_of_reach(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    config = make_test_config(tmp_path, mongo_storage, messaging=dict(BACKENDS["rabbit"]))
    name = queue()
    other_program = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        async with running_server(config) as base, JsonClient(base + "/ws") as bob:
            await bob.signin("admin", "admin")
            channel = await other_program.channel()
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
            payroll = await channel.declare_queue(f"{name}-payroll")
            await payroll.bind(exchange, "#")
            # an iapflow user (an admin, even) binds a queue to an exchange of that name with
            # "#" and consumes a queue of that name: both are iapflow's own, not the program's
            await bob.call("registerexchange", exchangename=name, algorithm="topic", routingkey="#")
            await bob.call("registerqueue", queuename=f"{name}-payroll")
            for i in range(3):
                await exchange.publish(aio_pika.Message(b'{"salary": 1}'), routing_key=f"p.{i}")
            assert await received(bob, 0.8) == []
            again = await channel.declare_queue(f"{name}-payroll", passive=True)
            assert again.declaration_result.message_count == 3
    finally:
        await other_program.close()
