"""Queues and exchanges through the JSON protocol, on both brokers: the in-process ``memory``
broker and RabbitMQ (``iapflow-rabbit``, against the RabbitMQ running on the machine)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server

Connect = Callable[..., Awaitable[JsonClient]]

BACKENDS = {
    "memory": {"backend": "memory"},
    "rabbit": {"backend": "rabbit", "amqp_url": "amqp://guest:guest@127.0.0.1:5672/"},
}


@pytest.fixture(params=sorted(BACKENDS))
def messaging(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``[messaging]`` for one backend; every test here runs once per backend."""
    return dict(BACKENDS[request.param])


@pytest.fixture
def config_overrides(messaging: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fast requeues so that error replies are redelivered quickly."""
    return {"messaging": messaging, "queues": {"requeue_delay_seconds": 0.05}}


def unique(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Inbox:
    """Collects a client's ``queuemessage`` pushes and answers each one.

    ``handler(data)`` may return ``"error"`` to refuse (requeue) a message; other pushes
    (``queueclosed``...) land in :attr:`other`.
    """

    def __init__(
        self, client: JsonClient, handler: Callable[[dict[str, Any]], Any] | None = None
    ) -> None:
        self.client = client
        self.handler = handler
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.other: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        client.on_push = self._on_push

    async def _on_push(self, command: str, data: dict[str, Any], push_id: str) -> None:
        if command != "queuemessage":
            self.other.put_nowait((command, data))
            return
        verdict = None
        if self.handler is not None:
            verdict = self.handler(data)
            if asyncio.iscoroutine(verdict):
                verdict = await verdict
        if verdict != "error":
            self.messages.put_nowait(data)
        await self.client.answer(push_id, "error" if verdict == "error" else "queuemessage")

    async def get(self, wait: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.messages.get(), wait)

    async def nothing(self, wait: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.messages.get(), wait)


async def send(client: JsonClient, **fields: Any) -> dict[str, Any]:
    return await client.call("queuemessage", **fields)


async def grant(owner: JsonClient, name: str, principal_id: str, rights: int = 2) -> None:
    """The owner of claimed queue ``name`` gives ``principal_id`` ``rights`` on it."""
    found = await owner.call("query", collectionname="mq", query={"name": name})
    doc = found["result"][0]
    doc["_acl"].append({"_id": principal_id, "rights": rights})
    await owner.call("updateone", collectionname="mq", item=doc)


# -- temporary and named queues -----------------------------------------------------------------


async def test_temporary_queue_gets_messages_with_sender_identity(
    admin: JsonClient, make_user: Callable[..., Awaitable[JsonClient]]
) -> None:
    alice = await make_user()
    reply = await alice.call("registerqueue", queuename="")
    name = reply["queuename"]
    assert "." in name and name == name.lower()
    inbox = Inbox(alice)
    await send(admin, queuename=name, data={"n": 1}, correlationId="c1")
    got = await inbox.get()
    assert got["queuename"] == name
    assert got["correlationId"] == "c1"
    assert got["data"]["n"] == 1
    assert got["data"]["__user"]["username"] == "admin"
    assert got["data"]["__jwt"] == admin.jwt
    assert {"replyto", "consumerTag", "routingkey", "exchangename"} <= set(got)
    await send(admin, queuename=name, data={"n": 2}, striptoken=True)
    got = await inbox.get()
    assert got["data"] == {"n": 2}


async def test_named_queue_competing_consumers(connect: Connect, admin: JsonClient) -> None:
    name = unique()
    consumers = []
    for _ in range(2):
        client = await connect()
        await client.signin("admin", "admin")
        assert (await client.call("registerqueue", queuename=name))["queuename"] == name
        consumers.append(Inbox(client))
    for i in range(20):
        await send(admin, queuename=name, data={"i": i})
    seen: list[int] = []
    counts = []
    for inbox in consumers:
        count = 0
        while True:
            try:
                seen.append((await inbox.get(1.0))["data"]["i"])
                count += 1
            except TimeoutError:
                break
        counts.append(count)
    assert sorted(seen) == list(range(20))
    assert all(c > 0 for c in counts), counts


async def test_named_queue_name_is_lower_cased_and_claimed(admin: JsonClient) -> None:
    name = unique("Mixed")
    reply = await admin.call("registerqueue", queuename=name)
    assert reply["queuename"] == name.lower()
    docs = await admin.call(
        "query", collectionname="mq", query={"name": name.lower(), "_type": "queue"}
    )
    assert len(docs["result"]) == 1


async def test_error_reply_requeues_the_message(admin: JsonClient, connect: Connect) -> None:
    name = unique()
    client = await connect()
    await client.signin("admin", "admin")
    refusals = []

    def refuse_once(data: dict[str, Any]) -> str | None:
        if not refusals:
            refusals.append(data)
            return "error"
        return None

    inbox = Inbox(client, refuse_once)
    await client.call("registerqueue", queuename=name)
    await send(admin, queuename=name, data={"x": 1})
    got = await inbox.get()
    assert got["data"]["x"] == 1 and len(refusals) == 1


async def test_closequeue_stops_delivery(admin: JsonClient, connect: Connect) -> None:
    name = unique()
    client = await connect()
    await client.signin("admin", "admin")
    inbox = Inbox(client)
    await client.call("registerqueue", queuename=name)
    await client.call("closequeue", queuename=name)
    await send(admin, queuename=name, data={"x": 1})
    await inbox.nothing()
    with pytest.raises(ReplyError, match="does not consume"):
        await client.call("unregisterqueue", queuename=name)
    await client.call("registerqueue", queuename=name)
    assert (await inbox.get())["data"]["x"] == 1


# -- exchanges ----------------------------------------------------------------------------------


async def _listener(connect: Connect, **fields: Any) -> tuple[Inbox, str]:
    client = await connect()
    await client.signin("admin", "admin")
    inbox = Inbox(client)
    reply = await client.call("registerexchange", **fields)
    assert reply["exchangename"] == fields["exchangename"]
    assert reply["queuename"]
    return inbox, reply["queuename"]


async def test_fanout_exchange(admin: JsonClient, connect: Connect) -> None:
    ex = unique("ex")
    one, _ = await _listener(connect, exchangename=ex, algorithm="fanout")
    two, _ = await _listener(connect, exchangename=ex, algorithm="fanout")
    await send(admin, exchangename=ex, data={"hello": 1})
    for inbox in (one, two):
        got = await inbox.get()
        assert got["data"]["hello"] == 1 and got["exchangename"] == ex


async def test_direct_exchange(admin: JsonClient, connect: Connect) -> None:
    ex = unique("ex")
    red, _ = await _listener(connect, exchangename=ex, algorithm="direct", routingkey="red")
    blue, _ = await _listener(connect, exchangename=ex, algorithm="direct", routingkey="blue")
    await send(admin, exchangename=ex, routingkey="red", data={"c": "red"})
    got = await red.get()
    assert got["data"]["c"] == "red" and got["routingkey"] == "red"
    await blue.nothing()


async def test_topic_exchange(admin: JsonClient, connect: Connect) -> None:
    ex = unique("ex")
    star, _ = await _listener(connect, exchangename=ex, algorithm="topic", routingkey="a.*")
    hash_, _ = await _listener(connect, exchangename=ex, algorithm="topic", routingkey="a.#")
    await send(admin, exchangename=ex, routingkey="a.b.c", data={"k": "abc"})
    assert (await hash_.get())["data"]["k"] == "abc"
    await star.nothing()
    await send(admin, exchangename=ex, routingkey="a.b", data={"k": "ab"})
    assert (await star.get())["data"]["k"] == "ab"
    assert (await hash_.get())["data"]["k"] == "ab"


async def test_headers_exchange(admin: JsonClient, connect: Connect) -> None:
    ex = unique("ex")
    match, _ = await _listener(
        connect, exchangename=ex, algorithm="headers", headers={"kind": "invoice"}
    )
    other, _ = await _listener(
        connect, exchangename=ex, algorithm="header", headers={"kind": "order"}
    )
    await send(admin, exchangename=ex, headers={"kind": "invoice"}, data={"n": 7})
    assert (await match.get())["data"]["n"] == 7
    await other.nothing()


async def test_exchange_type_conflict_and_addqueue_false(admin: JsonClient) -> None:
    ex = unique("ex")
    reply = await admin.call(
        "registerexchange", exchangename=ex, algorithm="fanout", addqueue=False
    )
    assert reply == {**reply, "exchangename": ex, "queuename": ""}
    with pytest.raises(ReplyError, match="exchange"):
        await admin.call("registerexchange", exchangename=ex, algorithm="direct")


# -- request/reply and timeouts ------------------------------------------------------------------


async def test_request_reply_with_correlation_id(
    connect: Connect, make_user: Callable[..., Awaitable[JsonClient]]
) -> None:
    worker = await make_user()
    requester = await make_user()
    service = unique("svc")

    async def answer(data: dict[str, Any]) -> None:
        await worker.call(
            "queuemessage",
            queuename=data["replyto"],
            correlationId=data["correlationId"],
            data={"result": data["data"]["x"] * 2},
        )

    Inbox(worker, answer)
    await worker.call("registerqueue", queuename=service)
    with pytest.raises(ReplyError, match="access denied"):
        await send(requester, queuename=service, data={})
    await grant(worker, service, requester.user["_id"])
    replies = Inbox(requester)
    mine = (await requester.call("registerqueue", queuename=""))["queuename"]
    for i in range(5):
        await send(requester, queuename=service, replyto=mine, correlationId=f"r{i}", data={"x": i})
    got = sorted([await replies.get() for _ in range(5)], key=lambda d: str(d["correlationId"]))
    assert [(d["correlationId"], d["data"]["result"]) for d in got] == [
        (f"r{i}", i * 2) for i in range(5)
    ]


async def test_expired_request_becomes_timeout(admin: JsonClient, connect: Connect) -> None:
    name = unique()
    worker = await connect()
    await worker.signin("admin", "admin")
    await worker.call("registerqueue", queuename=name)
    await worker.call("closequeue", queuename=name)  # the queue stays, nobody consumes it
    replies = Inbox(admin)
    mine = (await admin.call("registerqueue", queuename=""))["queuename"]
    await send(
        admin, queuename=name, replyto=mine, correlationId="late", expiration=200, data={"q": 1}
    )
    got = await replies.get()
    assert got["correlationId"] == "late"
    assert got["data"]["command"] == "timeout"
    assert "__jwt" not in got["data"]


async def test_unroutable_request_becomes_timeout(admin: JsonClient) -> None:
    replies = Inbox(admin)
    mine = (await admin.call("registerqueue", queuename=""))["queuename"]
    await send(admin, queuename=unique("nobody"), replyto=mine, correlationId="nr", data={})
    got = await replies.get()
    assert got["correlationId"] == "nr" and got["data"]["command"] == "timeout"
    ex = unique("ex")
    await admin.call("registerexchange", exchangename=ex, algorithm="direct", addqueue=False)
    await send(admin, exchangename=ex, routingkey="none", replyto=mine, correlationId="nx")
    got = await replies.get()
    assert got["correlationId"] == "nx" and got["data"]["command"] == "timeout"


async def test_send_to_missing_queue_without_replyto_is_an_error(admin: JsonClient) -> None:
    with pytest.raises(ReplyError, match="does not exist"):
        await send(admin, queuename=unique("nobody"), data={})


# -- connections closing --------------------------------------------------------------------------


async def test_disconnect_removes_consumers_and_temporary_queues(
    admin: JsonClient, connect: Connect
) -> None:
    named = unique()
    client = await connect()
    await client.signin("admin", "admin")
    temp = (await client.call("registerqueue", queuename=""))["queuename"]
    await client.call("registerqueue", queuename=named)
    await client.close()
    await asyncio.sleep(0.2)
    with pytest.raises(ReplyError, match="does not exist"):
        await send(admin, queuename=temp, data={})
    await send(admin, queuename=named, data={"kept": True})  # named queues keep messages
    other = await connect()
    await other.signin("admin", "admin")
    inbox = Inbox(other)
    await other.call("registerqueue", queuename=named)
    assert (await inbox.get())["data"]["kept"] is True


async def test_unacknowledged_message_goes_to_the_next_consumer(
    admin: JsonClient, connect: Connect
) -> None:
    name = unique()
    silent = await connect()
    await silent.signin("admin", "admin")
    pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    silent.on_push = lambda command, data, push_id: pushed.put_nowait(data)  # never answers
    await silent.call("registerqueue", queuename=name)
    await send(admin, queuename=name, data={"v": 1})
    assert (await asyncio.wait_for(pushed.get(), 10))["data"]["v"] == 1
    await silent.close()
    other = await connect()
    await other.signin("admin", "admin")
    inbox = Inbox(other)
    await other.call("registerqueue", queuename=name)
    assert (await inbox.get())["data"]["v"] == 1


# -- rights ----------------------------------------------------------------------------------------


async def test_inboxes_of_other_users_are_refused(
    make_user: Callable[..., Awaitable[JsonClient]],
) -> None:
    alice = await make_user()
    bob = await make_user()
    bob_id = bob.user["_id"]
    with pytest.raises(ReplyError, match="access denied"):
        await alice.call("registerqueue", queuename=bob_id)
    with pytest.raises(ReplyError, match="access denied"):
        await send(alice, queuename=bob_id, data={})
    inbox = Inbox(bob)
    assert (await bob.call("registerqueue", queuename=bob_id))["queuename"] == bob_id
    await send(bob, queuename=bob_id, data={"self": 1})
    assert (await inbox.get())["data"]["self"] == 1


async def test_claimed_queues_are_refused_to_others(
    admin: JsonClient, make_user: Callable[..., Awaitable[JsonClient]]
) -> None:
    alice = await make_user()
    bob = await make_user()
    name = unique("claimed")
    await alice.call("registerqueue", queuename=name)
    with pytest.raises(ReplyError, match="access denied"):
        await bob.call("registerqueue", queuename=name)
    with pytest.raises(ReplyError, match="access denied"):
        await send(bob, queuename=name, data={})
    ex = unique("ex")
    await alice.call("registerexchange", exchangename=ex, algorithm="fanout")
    with pytest.raises(ReplyError, match="access denied"):
        await bob.call("registerexchange", exchangename=ex, algorithm="fanout")
    with pytest.raises(ReplyError, match="access denied"):
        await send(bob, exchangename=ex, data={})
    await send(admin, queuename=name, data={})  # admins may


async def test_two_servers_racing_for_a_name_claim_it_once(
    tmp_path: Path,
    mongo_storage: dict[str, Any],
    config_overrides: dict[str, dict[str, Any]],
    admin: JsonClient,
    make_user: Callable[..., Awaitable[JsonClient]],
) -> None:
    """Two API replicas on one store: when two users register the same new name at the same
    moment, one on each replica, exactly one of them claims it."""
    alice = await make_user()
    bob_name = f"bob{uuid.uuid4().hex[:6]}"
    await make_user(bob_name)
    other = make_test_config(tmp_path / "replica", mongo_storage, **config_overrides)
    async with running_server(other) as base:
        bob = JsonClient(base + "/ws")
        await bob.connect()
        try:
            await bob.signin(bob_name, "secret")
            for _ in range(5):
                name = unique("race")
                outcomes = await asyncio.gather(
                    alice.call("registerqueue", queuename=name),
                    bob.call("registerqueue", queuename=name),
                    return_exceptions=True,
                )
                refused = [o for o in outcomes if isinstance(o, BaseException)]
                assert len(refused) == 1, outcomes
                assert isinstance(refused[0], ReplyError)
                assert "access denied" in str(refused[0])
                found = await admin.call("query", collectionname="mq", query={"name": name})
                assert len(found["result"]) == 1
                await (bob if refused[0] is outcomes[0] else alice).call(
                    "closequeue", queuename=name
                )
        finally:
            await bob.close()


async def test_temporary_queue_of_another_connection_cannot_be_claimed(
    make_user: Callable[..., Awaitable[JsonClient]],
) -> None:
    alice = await make_user()
    bob = await make_user()
    temp = (await alice.call("registerqueue", queuename=""))["queuename"]
    with pytest.raises(ReplyError, match="access denied"):
        await bob.call("registerqueue", queuename=temp)


async def test_reserved_names_are_refused(admin: JsonClient) -> None:
    for name in ("openflow", "amq.direct"):
        with pytest.raises(ReplyError, match="reserved"):
            await admin.call("registerqueue", queuename=name)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "fields", "message"),
    [
        ("registerexchange", {"exchangename": "x", "algorithm": "roundrobin"}, "algorithm"),
        ("registerexchange", {"exchangename": "x"}, "algorithm"),
        ("queuemessage", {"data": {}}, "queuename or an exchangename"),
        ("queuemessage", {"queuename": "q", "expiration": -5}, "expiration"),
        ("queuemessage", {"queuename": "q", "expiration": "soon"}, "expiration"),
        ("queuemessage", {"queuename": "q", "expiration": 1.5}, "expiration"),
        ("queuemessage", {"queuename": 12}, "queuename must be a string"),
        ("closequeue", {}, "needs a queuename"),
        ("registerexchange", {"algorithm": "fanout", "addqueue": "yes"}, "addqueue"),
    ],
)
async def test_bad_input_gets_a_clear_error(
    admin: JsonClient, command: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ReplyError, match=message):
        await admin.call(command, **fields)
    assert (await admin.call("registerqueue", queuename=""))["queuename"]  # still works
