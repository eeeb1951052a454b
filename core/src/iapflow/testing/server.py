"""Run an iapflow server inside the current event loop, on a free port, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iapflow.config import Config, build_config

if TYPE_CHECKING:
    from iapflow.platform import Platform

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_test_config(
    data_dir: Path, storage: Mapping[str, Any], **sections: Mapping[str, Any]
) -> Config:
    """A config for tests: fast bcrypt, no sign-in delay, a fixed secret, admin/admin."""
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": _free_port(), "data_dir": str(data_dir)},
        "grpc": {"port": 0},  # off unless a test asks for it
        "storage": dict(storage),
        "auth": {
            "bcrypt_rounds": 4,
            "signin_failure_delay_seconds": 0,
            "jwt_secret": TEST_SECRET,
            "admin_username": "admin",
            "admin_password": "admin",
        },
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return build_config(data)


@contextlib.asynccontextmanager
async def serving(config: Config, plugins: Any = None) -> AsyncIterator[tuple[str, Platform]]:
    """Serve ``config`` with uvicorn in this loop; yield the websocket base URL and the
    running :class:`~iapflow.platform.Platform` (for tests that look at its state)."""
    import uvicorn

    from iapflow.app import create_app, uvicorn_config

    app = create_app(config, plugins)
    server = uvicorn.Server(uvicorn_config(app, config, "warning"))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped while starting")
        await asyncio.sleep(0.01)
    try:
        yield f"ws://{config.server.host}:{config.server.port}", app.state.platform
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running_server(config: Config, plugins: Any = None) -> AsyncIterator[str]:
    """Serve ``config`` with uvicorn in this loop; yield the websocket base URL."""
    async with serving(config, plugins) as (base, _platform):
        yield base
