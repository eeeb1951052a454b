"""The security suite: a user attacking a real server through its public protocols.

Tests are grouped by what the attacker is after: ``test_read`` (data it may not read),
``test_write`` (data it may not change or plant), ``test_impersonate`` (acting as someone else),
``test_consume`` (messages meant for others) and ``test_exhaust`` (the server's and the store's
time and memory). ``test_acl`` and ``test_hostile_input`` hold the first review's cases: the ACL
on every read path and malformed input.

Data cases run over the JSON websocket and over gRPC (the ``transport`` fixture); queue cases
on the in-process broker and on RabbitMQ.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from attack import b64, free_port

from iapflow.testing import JsonClient
from iapflow.testing.grpc_client import GrpcClient

Client = JsonClient | GrpcClient

_names = itertools.count(1)


@pytest.fixture
def grpc_port() -> int:
    """The gRPC port of this test's server."""
    return free_port()


@pytest.fixture
def config_overrides(grpc_port: int) -> dict[str, dict[str, Any]]:
    """gRPC on, so that data cases can attack both transports."""
    return {"grpc": {"port": grpc_port}}


@pytest.fixture(params=["json", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    """The protocol the attacker speaks; each data case runs on both."""
    return str(request.param)


@pytest.fixture
async def new_user(admin: JsonClient) -> Callable[..., Awaitable[str]]:
    """Create a user as the admin; return its id."""

    async def create(username: str = "", password: str = "secret", **fields: Any) -> str:
        username = username or f"sec{next(_names)}"
        reply = await admin.call(
            "insertone",
            collectionname="users",
            item={"_type": "user", "username": username, "newpassword": password, **fields},
        )
        return str(reply["result"]["_id"])

    return create


@pytest.fixture
async def login(
    server: str, grpc_port: int, transport: str, connect: Callable[..., Awaitable[JsonClient]]
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Sign in as a user over ``via`` (default: the test's ``transport``)."""
    opened: list[GrpcClient] = []

    async def sign_in(username: str, password: str = "secret", via: str = "") -> Client:
        if (via or transport) == "json":
            client = await connect()
            await client.signin(username, password)
            return client
        grpc_client = GrpcClient(f"127.0.0.1:{grpc_port}")
        await grpc_client.connect()
        opened.append(grpc_client)
        await grpc_client.signin(username, password)
        return grpc_client

    yield sign_in
    for client in opened:
        await client.close()


@pytest.fixture
async def two(
    new_user: Callable[..., Awaitable[str]],
    login: Callable[..., Awaitable[Client]],
    connect: Callable[..., Awaitable[JsonClient]],
) -> dict[str, Any]:
    """alice (JSON) and bob, the attacker (the test's transport), each with a work item queue;
    bob's chains finished items into a second queue of his."""
    await new_user("alice")
    await new_user("bob")
    alice: JsonClient = await connect()
    await alice.signin("alice", "secret")
    bob_json: JsonClient = await connect()
    await bob_json.signin("bob", "secret")
    tag = uuid.uuid4().hex[:8]
    aq = (await alice.call("addworkitemqueue", name=f"alice-{tag}"))["result"]
    done = (await bob_json.call("addworkitemqueue", name=f"done-{tag}"))["result"]
    bq = (await bob_json.call("addworkitemqueue", name=f"bob-{tag}", success_wiqid=done["_id"]))[
        "result"
    ]
    secret = await alice.call(
        "savefile", filename="secret.txt", file=b64(b"alice's secret"), metadata={"_acl": []}
    )
    return {
        "alice": alice, "bob": await login("bob"), "bob_json": bob_json, "aq": aq, "bq": bq,
        "done": done, "secret": secret["id"],
    }  # fmt: skip
