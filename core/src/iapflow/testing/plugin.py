"""iapflow's pytest plugin (entry point ``pytest11``, so pytest loads it wherever iapflow is
installed with its ``test`` extra): a real server with every installed plugin, on a fresh
database for each test, and signed-in JSON protocol clients.

A storage plugin's own pytest plugin provides ``iapflow_storage``, the ``[storage]`` options
of a fresh database (``iapflow-mongo`` does: the MongoDB-compatible test server, or
``MONGO_URI``). Override ``iapflow_config_overrides`` in a test module for other settings,
``iapflow_plugins`` to serve with plugins that are not installed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from iapflow.testing.client import JsonClient
from iapflow.testing.server import make_test_config, serving

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.plugins import Plugins

_names = itertools.count(1)

Connect = Callable[..., Awaitable[JsonClient]]


@dataclass(frozen=True)
class Served:
    """A running test server."""

    url: str
    """The JSON protocol's websocket URL (``ws://host:port/ws``)."""
    http: str
    """The HTTP base URL (``http://host:port``)."""
    platform: Platform
    """The running platform, to look at what the server holds."""


@pytest.fixture
def iapflow_config_overrides() -> dict[str, dict[str, Any]]:
    """Config sections to merge over the test defaults (override it in a test module)."""
    return {}


@pytest.fixture
def iapflow_plugins() -> Plugins | None:
    """The plugins to serve with; ``None`` means the installed ones (override it to add one
    that is not installed)."""
    return None


@pytest_asyncio.fixture
async def iapflow_server(
    tmp_path: Path,
    iapflow_storage: dict[str, Any],
    iapflow_config_overrides: dict[str, dict[str, Any]],
    iapflow_plugins: Plugins | None,
) -> AsyncIterator[Served]:
    """A running server: fast bcrypt, no sign-in delay, user ``admin`` with password
    ``admin``, on a fresh database."""
    config = make_test_config(tmp_path, iapflow_storage, **iapflow_config_overrides)
    async with serving(config, iapflow_plugins) as (base, platform):
        yield Served(base + "/ws", base.replace("ws://", "http://", 1), platform)


@pytest_asyncio.fixture
async def iapflow_connect(iapflow_server: Served) -> AsyncIterator[Connect]:
    """Open clients to the server (``await iapflow_connect()``, not signed in); all are
    closed at the end of the test."""
    clients: list[JsonClient] = []

    async def connect(**kwargs: Any) -> JsonClient:
        client = JsonClient(iapflow_server.url, **kwargs)
        await client.connect()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def iapflow_admin(iapflow_connect: Connect) -> JsonClient:
    """A client signed in as the server's admin."""
    client = await iapflow_connect()
    await client.signin("admin", "admin")
    return client


@pytest_asyncio.fixture
async def iapflow_user(iapflow_admin: JsonClient, iapflow_connect: Connect) -> Connect:
    """Make a user through the API and sign a new client in as it:
    ``await iapflow_user("alice", "secret", **fields)`` (both names optional)."""

    async def create(username: str = "", password: str = "secret", **fields: Any) -> JsonClient:
        username = username or f"user{next(_names)}"
        await iapflow_admin.call(
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
        client = await iapflow_connect()
        await client.signin(username, password)
        return client

    return create
