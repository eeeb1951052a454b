"""Attacker goal: break other users' message traffic through the broker.

The second review dropped every user's RabbitMQ connection with one message carrying ~200 KB of
headers (over RabbitMQ's frame size; messages waiting in temporary queues were lost), failed
50 of another user's 60 concurrent sends by sending to exchanges that do not exist (and one
send reported as failed was delivered anyway), and got "internal error" with a traceback for
queue names with ``*`` or over 255 bytes and over-long correlation ids. On both brokers.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from attack import refused

from iapflow.platform import Platform
from iapflow.testing import JsonClient, ReplyError, make_test_config, serving

BACKENDS = {
    "memory": {"backend": "memory"},
    "rabbit": {"backend": "rabbit", "amqp_url": "amqp://guest:guest@127.0.0.1:5672/"},
}
HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"queuename": "q", "data": {}, "headers": {"h": "v" * 200_000}}, "at most 16384"),
    ({"queuename": "q", "data": {}, "headers": {f"h{i}": i for i in range(100)}}, "at most 64"),
    ({"queuename": "q", "data": {}, "headers": {"CC": ["x"]}}, "not allowed"),
    ({"queuename": "a*b", "data": {}}, "characters"),
    ({"queuename": "q" * 201, "data": {}}, "at most 200"),
    ({"queuename": "caf\u00e9", "data": {}}, "characters"),
    ({"queuename": "q", "data": {}, "correlationId": "c" * 300}, "at most 255 bytes"),
    ({"exchangename": "e", "routingkey": "k" * 300, "data": {}}, "at most 255 bytes"),
]


@pytest.fixture(params=sorted(BACKENDS))
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, mongo_storage: dict[str, Any]
) -> AsyncIterator[tuple[str, Platform]]:
    """A server on each broker; yields its websocket URL and its platform."""
    config = make_test_config(tmp_path, mongo_storage, messaging=dict(BACKENDS[request.param]))
    async with serving(config) as (base, platform):
        yield base + "/ws", platform


@pytest.fixture
async def users(
    site: tuple[str, Platform],
) -> AsyncIterator[Callable[[], Awaitable[JsonClient]]]:
    """Signed-in users of the site, closed at the end."""
    url = site[0]
    opened: list[JsonClient] = []
    async with JsonClient(url) as admin:
        await admin.signin("admin", "admin")

        async def make() -> JsonClient:
            name = f"b{uuid.uuid4().hex[:10]}"
            await admin.call(
                "insertone",
                collectionname="users",
                item={"_type": "user", "username": name, "newpassword": "pw"},
            )
            client = JsonClient(url)
            await client.connect()
            await client.signin(name, "pw")
            opened.append(client)
            return client

        yield make
    for client in opened:
        await client.close()


def collect(client: JsonClient) -> asyncio.Queue[dict[str, Any]]:
    """The queue messages ``client`` gets, each answered (so the broker keeps delivering)."""
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_push(command: str, data: dict[str, Any], push_id: str) -> None:
        await client.answer(push_id, "queuemessage")
        if command == "queuemessage":
            got.put_nowait(data)

    client.on_push = on_push
    return got


def reconnects(platform: Platform) -> int:
    """How often the rabbit broker had to reconnect (0 on the in-process broker)."""
    return int(getattr(platform.broker, "reconnects", 0))


async def test_messages_over_the_limits_get_clear_errors_and_break_nothing(
    site: tuple[str, Platform], users: Callable[[], Awaitable[JsonClient]]
) -> None:
    platform = site[1]
    attacker, honest = await users(), await users()
    await attacker.call("registerqueue", queuename=f"own-{uuid.uuid4().hex[:8]}")
    got = collect(honest)
    inbox = (await honest.call("registerqueue", queuename=""))["queuename"]
    for data, says in HOSTILE:
        message = await refused(attacker, "queuemessage", **data)
        assert says in message and "internal error" not in message, (data, message)
    for name in ("a*b", "q" * 201, "caf\u00e9"):
        assert "characters" in await refused(attacker, "registerqueue", queuename=name)
        says = await refused(attacker, "registerexchange", exchangename=name, algorithm="fanout")
        assert "characters" in says
    # the honest user's traffic never noticed
    await honest.call("queuemessage", queuename=inbox, data={"fine": True})
    assert (await asyncio.wait_for(got.get(), 10))["data"]["fine"] is True
    assert reconnects(platform) == 0


async def test_sends_to_missing_exchanges_fail_only_for_their_sender(
    site: tuple[str, Platform], users: Callable[[], Awaitable[JsonClient]]
) -> None:
    platform = site[1]
    attacker, honest = await users(), await users()
    got = collect(honest)
    exchange = await honest.call("registerexchange", exchangename="", algorithm="fanout")
    name, bound = exchange["exchangename"], exchange["queuename"]

    async def attack(i: int) -> str:
        return await refused(
            attacker, "queuemessage", exchangename=f"missing-{i}-{uuid.uuid4().hex[:6]}", data={}
        )

    async def send(i: int) -> dict[str, Any]:
        return await honest.call("queuemessage", exchangename=name, data={"i": i})

    results = await asyncio.gather(
        *(attack(i) for i in range(60)), *(send(i) for i in range(60)), return_exceptions=True
    )
    failures = [r for r in results[60:] if isinstance(r, BaseException)]
    assert failures == []
    assert all(isinstance(r, str) and "does not exist" in r for r in results[:60])
    seen = []
    for _ in range(60):
        pushed = await asyncio.wait_for(got.get(), 10)
        assert pushed["queuename"] == bound
        seen.append(pushed["data"]["i"])
    assert sorted(seen) == list(range(60))  # each delivered once
    assert reconnects(platform) == 0


async def test_a_flood_of_hostile_sends_leaves_another_users_round_trips_whole(
    site: tuple[str, Platform], users: Callable[[], Awaitable[JsonClient]]
) -> None:
    platform = site[1]
    attacker, worker, requester = await users(), await users(), await users()
    service = f"svc-{uuid.uuid4().hex[:8]}"

    async def serve(command: str, data: dict[str, Any], push_id: str) -> None:
        await worker.answer(push_id, "queuemessage")
        if command == "queuemessage":
            await worker.call(
                "queuemessage",
                queuename=data["replyto"],
                correlationId=data["correlationId"],
                data={"n": data["data"]["n"]},
            )

    worker.on_push = serve
    await worker.call("registerqueue", queuename=service)
    claims = await worker.call("query", collectionname="mq", query={"name": service})
    claim = claims["result"][0]
    grant = {"_id": requester.user["_id"], "name": "", "rights": 2}
    await worker.call(
        "updateone", collectionname="mq", item={**claim, "_acl": [*claim["_acl"], grant]}
    )
    replies: dict[str, list[int]] = {}
    done = asyncio.Event()

    async def collect(command: str, data: dict[str, Any], push_id: str) -> None:
        await requester.answer(push_id, "queuemessage")
        if command == "queuemessage":
            replies.setdefault(data["correlationId"], []).append(data["data"]["n"])
            if len(replies) == 1000:
                done.set()

    requester.on_push = collect
    inbox = (await requester.call("registerqueue", queuename=""))["queuename"]
    stop = asyncio.Event()

    async def flood() -> int:
        sent = 0
        for data, _says in itertools.cycle([*HOSTILE, ({"exchangename": "nope", "data": {}}, "")]):
            if stop.is_set():
                return sent
            try:
                await attacker.call("queuemessage", **data)
            except ReplyError:
                sent += 1
        return sent

    floods = [asyncio.ensure_future(flood()) for _ in range(3)]
    in_flight = asyncio.Semaphore(20)

    async def ask(n: int) -> None:
        async with in_flight:
            await requester.call(
                "queuemessage", queuename=service, replyto=inbox, correlationId=f"r{n}",
                data={"n": n}, expiration=60000,
            )  # fmt: skip

    await asyncio.gather(*(ask(n) for n in range(1000)))
    await asyncio.wait_for(done.wait(), 120)
    stop.set()
    refusals = sum(await asyncio.gather(*floods))
    assert refusals > 100  # the flood really ran alongside
    assert len(replies) == 1000  # none lost
    assert all(values == [int(key[1:])] for key, values in replies.items())  # none duplicated
    assert reconnects(platform) == 0
