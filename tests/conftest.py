"""Fixtures for tests of the assembled system: a real iapflow server on the session's
MongoDB-compatible server (see iapflow_mongo.testing), and signed-in JSON protocol clients."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iapflow.testing import JsonClient, make_test_config, running_server

_names = itertools.count(1)


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    """Per-module config sections to merge over the test defaults (override this fixture)."""
    return {}


@pytest.fixture
async def server(
    tmp_path: Path, mongo_storage: dict[str, Any], config_overrides: dict[str, dict[str, Any]]
) -> AsyncIterator[str]:
    """A running server; yields its JSON websocket URL."""
    config = make_test_config(tmp_path, mongo_storage, **config_overrides)
    async with running_server(config) as base:
        yield base + "/ws"


@pytest.fixture
async def connect(server: str) -> AsyncIterator[Callable[..., Awaitable[JsonClient]]]:
    """Open more (unsigned) clients to the server; all are closed at the end of the test."""
    clients: list[JsonClient] = []

    async def open_client(**kwargs: Any) -> JsonClient:
        client = JsonClient(server, **kwargs)
        await client.connect()
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


@pytest.fixture
async def admin(connect: Callable[..., Awaitable[JsonClient]]) -> JsonClient:
    """A client signed in as the configured admin."""
    client = await connect()
    await client.signin("admin", "admin")
    return client


@pytest.fixture
async def make_user(
    admin: JsonClient, connect: Callable[..., Awaitable[JsonClient]]
) -> Callable[..., Awaitable[JsonClient]]:
    """Create a user through the API (as admin) and return a client signed in as it."""

    async def create(username: str = "", password: str = "secret", **fields: Any) -> JsonClient:
        username = username or f"user{next(_names)}"
        await admin.call(
            "insertone",
            collectionname="users",
            item={
                "_type": "user",
                "username": username,
                "name": username,
                "newpassword": password,
                **fields,
            },
        )
        client = await connect()
        await client.signin(username, password)
        return client

    return create
