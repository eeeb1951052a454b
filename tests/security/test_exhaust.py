"""Attacker goal: exhaust the store or the server, for everyone.

The first review stalled the embedded store for minutes with one regex (``^(a+)+$`` over
30-character values; every command of every user failed), spent 20 s of store CPU on one
projection, held 64 MiB per connection that never signed in (no server-wide cap), and got 289 of
300 concurrent watches past a cap of 256; a second server process bound the same gRPC port and
took half the clients.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from attack import Login, NewUser, free_port, refused, result

from iapflow.builtin.proto.config import GrpcConfig
from iapflow.errors import StartupError
from iapflow.platform import Platform
from iapflow.testing import JsonClient, ReplyError, make_test_config, serving
from iapflow.testing.grpc_client import GrpcClient

SLOW = "^(a+)+$"  # minutes of backtracking on "aaa...a!" in any engine that backtracks
S = "strings"
HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("query", {"collectionname": S, "query": {"s": f"__REGEXP {SLOW}"}}),
    ("query", {"collectionname": S, "query": {"s": {"$regex": SLOW}}}),
    ("query", {"collectionname": S, "query": {"s": {"$regex": "(x+x+)+y", "$options": "i"}}}),
    ("query", {"collectionname": S, "query": {"s": {"$not": {"$regex": r"(\w+\s?)*$"}}}}),
    ("query", {"collectionname": S, "query": {"s": {"$in": [f"__REGEXP {SLOW}"]}}}),
    ("count", {"collectionname": S, "query": {"s": {"$regex": ".*.*=.*"}}}),
    ("distinct", {"collectionname": S, "field": "s", "query": {"s": {"$regex": "(a|a)*b"}}}),
    ("deletemany", {"collectionname": S, "query": {"s": {"$regex": SLOW}}}),
    ("aggregate", {"collectionname": S, "aggregates": [
        {"$match": {"$expr": {"$regexMatch": {"input": "$s", "regex": SLOW}}}}]}),
    ("aggregate", {"collectionname": S, "aggregates": [
        {"$project": {"m": {"$regexFindAll": {"input": "$s", "regex": "$s"}}}}]}),
    ("aggregate", {"collectionname": S, "aggregates": [
        {"$lookup": {"from": S, "pipeline": [{"$match": {"s": {"$regex": SLOW}}}], "as": "j"}}]}),
]  # fmt: skip
OVERSIZED: list[tuple[str, dict[str, Any], str]] = [
    ("query", {"collectionname": S, "query": {},
               "projection": {f"f{i}": 1 for i in range(300)}}, "projection"),
    ("query", {"collectionname": S, "query": {"$or": [{"n": i} for i in range(3000)]}},
     "fields and operators"),
    ("query", {"collectionname": S, "query": {}, "orderby": {f"f{i}": 1 for i in range(40)}},
     "orderby"),
    ("aggregate", {"collectionname": S, "aggregates": [
        {"$project": {f"f{i}": {"$concat": ["$s", "$s"]} for i in range(2000)}}]},
     "fields and operators"),
    ("aggregate", {"collectionname": S, "aggregates": [{"$match": {}}] * 150}, "stages"),
]  # fmt: skip


@pytest.fixture
def config_overrides(grpc_port: int) -> dict[str, dict[str, Any]]:
    """gRPC on, and a short store time limit for the slow-but-allowed read."""
    return {"grpc": {"port": grpc_port}, "query": {"max_time_ms": 300}}


@pytest.fixture
async def pair(
    new_user: NewUser, login: Login, connect: Callable[..., Awaitable[JsonClient]]
) -> Any:
    """alice (JSON), counting her own collection, and bob (the test's transport) with a
    collection of strings a backtracking regex would choke on."""
    await new_user("alice")
    await new_user("bob")
    alice = await connect()
    await alice.signin("alice", "secret")
    await alice.call("insertmany", collectionname="mine", items=[{"n": i} for i in range(5)])
    bob = await login("bob")
    items = [{"s": "a" * 30 + "!", "n": i} for i in range(200)]
    await bob.call("insertmany", collectionname="strings", items=items)
    return alice, bob


async def counts_stay_quick(alice: JsonClient, attack: Awaitable[Any]) -> list[float]:
    """Run ``attack`` while alice counts her own collection; the time of each count."""
    times: list[float] = []
    running = asyncio.ensure_future(attack)
    try:
        while not running.done() or len(times) < 5:
            started = time.monotonic()
            assert (await alice.call("count", collectionname="mine"))["result"] == 5
            times.append(time.monotonic() - started)
            await asyncio.sleep(0.01)
    finally:
        await running
    return times


async def test_hostile_regexes_are_refused_and_the_store_keeps_answering(pair: Any) -> None:
    alice, bob = pair

    async def attack() -> list[str]:
        return [await refused(bob, command, **data) for command, data in HOSTILE]

    times = await counts_stay_quick(alice, attack())
    assert max(times) < 1.0, times
    for message in await attack():
        assert "regular expression" in message or "regex" in message, message
    # an honest regex still works
    found = await bob.call("query", collectionname="strings", query={"s": {"$regex": "^a+!$"}})
    assert len(result(found)) == 100  # the default top


async def test_oversized_requests_are_refused_and_the_store_keeps_answering(pair: Any) -> None:
    alice, bob = pair

    async def attack() -> list[str]:
        return [await refused(bob, command, **data) for command, data, _says in OVERSIZED]

    times = await counts_stay_quick(alice, attack())
    assert max(times) < 1.0, times
    for message, (_command, _data, says) in zip(await attack(), OVERSIZED, strict=True):
        assert says in message and "at most" in message, message


async def test_a_slow_read_is_stopped_at_the_time_limit(pair: Any) -> None:
    alice, bob = pair
    many = {"n": {"$in": list(range(100_000))}}

    async def attack() -> str:
        return await refused(bob, "count", collectionname="strings", query=many)

    times = await counts_stay_quick(alice, attack())
    assert max(times) < 1.0, times
    says = await attack()
    assert "300 ms" in says and "max_time_ms" in says, says


async def test_watch_filters_cannot_hold_hostile_regexes(admin: JsonClient) -> None:
    for fields in (
        {"aggregates": [{"$match": {"s": {"$regex": SLOW}}}]},
        {"paths": [f'$.a[?(@.s =~ "{SLOW}")]']},
    ):
        says = await refused(admin, "watch", collectionname="strings", **fields)
        assert "regular expression" in says


# -- memory before and after sign-in ------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path, mongo_storage: dict[str, Any]) -> AsyncIterator[Any]:
    """A server of its own, to look at its buffer budget: 64 KiB before sign-in, 600 kB in
    all."""
    config = make_test_config(
        tmp_path,
        mongo_storage,
        websocket={"max_unsigned_message_bytes": 65536, "max_pending_bytes": 600_000},
        grpc={"port": free_port()},
    )
    async with serving(config) as (base, platform):
        yield base, platform


async def pieces(ws: Any, message_id: str, count: int, piece: str, sent: int) -> None:
    for index in range(sent):
        frame = {"id": message_id, "command": "insertone", "data": piece, "count": count,
                 "index": index}  # fmt: skip
        await ws.send(json.dumps(frame))


async def error_of(ws: Any) -> str:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["command"] == "error":
            return str(json.loads(frame["data"])["message"])


async def test_before_sign_in_a_connection_buffers_little(served: Any) -> None:
    base, platform = served
    async with websockets.connect(base + "/ws", max_size=2**24) as ws:
        await ws.send(json.dumps({"id": "1", "command": "signin", "data": "x" * 70_000}))
        assert "before sign-in" in await error_of(ws)
        await pieces(ws, "2", 10, "y" * 30_000, 3)  # 90 kB of a message that never ends
        assert "before sign-in" in await error_of(ws)
        assert platform.buffers.used == 0  # the refused message let go of its pieces
    async with websockets.connect(base + "/ws/v2", max_size=2**24) as ws:
        for _ in range(2):  # the greeting ping: its length, then the envelope
            await ws.recv()
        await ws.send(struct.pack("<I", 10_000_000))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with GrpcClient(f"127.0.0.1:{platform.config.section(GrpcConfig).port}") as anonymous:
        with pytest.raises(ReplyError, match="sign in first"):
            await anonymous.upload("big.bin", b"z" * 300_000)
    await asyncio.sleep(0.1)
    assert platform.buffers.used == 0


async def test_all_connections_together_buffer_no_more_than_the_server_wide_cap(
    served: Any,
) -> None:
    base, platform = served
    clients = []
    for _ in range(4):
        client = JsonClient(base + "/ws")
        await client.connect()
        await client.signin("admin", "admin")
        clients.append(client)
    sockets = [c.ws for c in clients]
    piece = "p" * 250_000
    await pieces(sockets[0], "a", 5, piece, 1)
    await pieces(sockets[1], "b", 5, piece, 1)
    await asyncio.sleep(0.2)
    assert platform.buffers.used == 500_000
    frames = []

    async def capture(command: str, data: dict[str, Any], _push_id: str) -> None:
        frames.append((command, data))

    clients[2].on_push = capture
    await pieces(sockets[2], "c", 5, piece, 1)  # would pass 600 kB: this message is refused
    reply = await clients[3].call("count", collectionname="users")  # others carry on
    assert reply["result"] >= 1
    await asyncio.sleep(0.2)
    assert [c for c, d in frames if c == "error" and "max_pending_bytes" in d["message"]]
    assert platform.buffers.used == 500_000
    for client in clients:
        await client.close()
    await asyncio.sleep(0.2)
    assert platform.buffers.used == 0


async def test_a_burst_of_watches_stops_at_the_cap(admin: JsonClient) -> None:
    replies = await asyncio.gather(
        *(admin.request("watch", {"collectionname": "w"}) for _ in range(300))
    )
    accepted = [data for command, data in replies if command != "error"]
    refusals = [data["message"] for command, data in replies if command == "error"]
    assert len(accepted) == 256, len(accepted)
    assert all("at most 256 watches" in m for m in refusals)


async def test_a_second_server_cannot_take_the_grpc_port(
    tmp_path: Path, mongo_storage: dict[str, Any], grpc_port: int, server: str
) -> None:
    intruder = Platform(
        make_test_config(tmp_path / "intruder", mongo_storage, grpc={"port": grpc_port})
    )
    intruder.prepare()
    with pytest.raises(StartupError, match=f"gRPC port {grpc_port} .* in use"):
        await intruder.start()
    async with GrpcClient(f"127.0.0.1:{grpc_port}") as client:  # the first still serves
        await client.signin("admin", "admin")
