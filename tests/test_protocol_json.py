"""OpenFlow's JSON websocket protocol: framing, pieces, replies, pings, timeouts, paths."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets

from iapflow.testing import JsonClient

Connect = Callable[..., Awaitable[JsonClient]]


@pytest.mark.parametrize("path", ["/", "/ws", "/ws/v1"])
async def test_every_json_path_answers_signin(server: str, path: str) -> None:
    base = server.removesuffix("/ws")
    async with JsonClient(base + path) as client:
        reply = await client.signin("admin", "admin")
    assert reply["user"]["username"] == "admin"


async def test_reply_echoes_request_without_secrets_and_advertises_package_size(
    connect: Connect,
) -> None:
    client = await connect()
    command, reply = await client.request(
        "signin", {"username": "admin", "password": "admin", "clientagent": "pytest"}, "req-1"
    )
    assert command == "signin"
    assert reply["clientagent"] == "pytest"  # the request is echoed
    assert "password" not in reply
    assert reply["websocket_package_size"] == 25000
    assert reply["supports_watch"] is True  # the watch plugin is loaded
    assert set(reply["user"]) >= {"_id", "name", "username", "roles"}
    assert {"_id": "5a17f157c4815318c8536c21", "name": "users"} in reply["user"]["roles"]


async def test_reply_frame_carries_replyto_and_command(connect: Connect) -> None:
    client = await connect()
    await client.signin("admin", "admin")
    ws = await websockets.connect(client.url)
    try:
        await ws.send(
            json.dumps({"id": "abc", "command": "signin", "data": json.dumps({"jwt": client.jwt})})
        )
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    finally:
        await ws.close()
    assert frame["replyto"] == "abc"
    assert frame["command"] == "signin"
    assert frame["id"] != "abc"
    assert isinstance(frame["data"], str)


async def test_error_reply_carries_message_error_and_replyto(connect: Connect) -> None:
    client = await connect()
    command, reply = await client.request("nosuchcommand", {}, "e-1")
    assert command == "error"
    assert "nosuchcommand" in reply["message"]
    assert reply["error"] == reply["message"]


async def test_commands_need_a_signin_or_a_jwt(connect: Connect, admin: JsonClient) -> None:
    anonymous = await connect()
    command, reply = await anonymous.request("query", {"collectionname": "entities"})
    assert command == "error"
    assert "Not signed in" in reply["message"]
    # A per-message jwt acts for that one message.
    reply = await anonymous.call("query", collectionname="entities", jwt=admin.jwt)
    assert reply["result"] == []
    assert "jwt" not in reply  # input-only fields are not echoed


async def test_long_request_in_pieces_and_long_reply_in_pieces(connect: Connect) -> None:
    client = await connect(package_size=500)
    await client.signin("admin", "admin")
    big = "x" * 120_000
    inserted = await client.call("insertone", collectionname="entities", item={"big": big})
    assert inserted["result"]["big"] == big  # the 120 kB reply came back in 25 kB pieces
    found = await client.call(
        "query", collectionname="entities", query={"_id": inserted["result"]["_id"]}
    )
    assert found["result"][0]["big"] == big


async def test_pieces_out_of_order_are_reassembled(connect: Connect) -> None:
    client = await connect()
    await client.signin("admin", "admin")
    text = json.dumps({"collectionname": "entities", "item": {"name": "pieces"}})
    parts = [text[i : i + 10] for i in range(0, len(text), 10)]
    for index in reversed(range(len(parts))):
        await client.send_frame(
            {
                "id": "p-1",
                "command": "insertone",
                "data": parts[index],
                "count": len(parts),
                "index": index,
            }
        )
    count = await client.call("count", collectionname="entities", query={"name": "pieces"})
    assert count["result"] == 1


async def test_ping_gets_pong(connect: Connect) -> None:
    client = await connect()
    command, _reply = await client.request("ping", {})
    assert command == "pong"


async def test_socket_that_never_signs_in_is_closed(connect: Connect) -> None:
    client = await connect()
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.ws.close_code == 1008


async def test_signed_in_socket_outlives_the_signin_timeout(admin: JsonClient) -> None:
    await asyncio.sleep(2.5)
    reply = await admin.call("count", collectionname="entities")
    assert reply["result"] == 0


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {
        "websocket": {
            "signin_timeout_seconds": 1.5,
            "ping_interval_seconds": 0.5,
            "ping_timeout_seconds": 2,
        }
    }


async def test_idle_client_answering_pings_is_not_dropped(admin: JsonClient) -> None:
    # OpenFlow drops clients silent for 60 s; iapflow keeps any socket that answers pings.
    await asyncio.sleep(4)
    assert not admin.closed.is_set()
    assert (await admin.call("count", collectionname="entities"))["result"] == 0


async def test_many_requests_in_flight_all_get_their_own_reply(admin: JsonClient) -> None:
    async def insert(n: int) -> int:
        reply = await admin.call("insertone", collectionname="entities", item={"n": n})
        return int(reply["result"]["n"])

    results = await asyncio.gather(*(insert(n) for n in range(100)))
    assert results == list(range(100))


async def test_config_endpoint_lists_the_protocols(server: str) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        reply = (
            await http.get(server.replace("ws://", "http://").removesuffix("/ws") + "/config")
        ).json()
    assert reply["protocols"]["json"] == ["/", "/ws", "/ws/v1"]
    assert reply["protocols"]["proto"] == ["/ws/v2"]
    assert "grpc" not in reply["protocols"]  # the tests run with [grpc] port = 0
    assert reply["websocket_package_size"] == 25000
