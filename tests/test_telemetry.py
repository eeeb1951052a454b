"""The telemetry hooks: a plugin that implements ``wrap_command``, ``wrap_storage``,
``wrap_broker``, ``wrap_asgi`` and the connection and sign-in observers sees every command on
every transport (with its caller, duration and error), every storage, file store and broker
call, every HTTP request and websocket, and each connection open and close; without such a
plugin nothing is wrapped."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from iapflow import hookimpl
from iapflow.builtin.proto.config import GrpcConfig
from iapflow.plugins import Plugins
from iapflow.session import Session
from iapflow.telemetry import BackendCall, CommandCall
from iapflow.testing import JsonClient, ReplyError, make_test_config, serving
from iapflow.testing.grpc_client import GrpcClient


class Recorder:
    """An observability plugin in miniature: it records what an OpenTelemetry plugin would
    turn into spans and metrics."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.backend: list[BackendCall] = []
        self.http: list[tuple[str, str]] = []
        self.sessions: list[tuple[str, str]] = []
        self.signins: list[dict[str, Any]] = []

    @hookimpl
    async def wrap_command(self, call: CommandCall, proceed: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        error = None
        try:
            return await proceed()
        except Exception as exc:
            error = str(exc)
            raise
        finally:
            self.commands.append(
                {
                    "command": call.command,
                    "transport": call.transport,
                    "user": call.principal.username if call.principal else None,
                    "seconds": time.perf_counter() - started,
                    "error": error,
                }
            )

    @hookimpl
    async def wrap_storage(self, call: BackendCall, proceed: Callable[[], Awaitable[Any]]) -> Any:
        self.backend.append(call)
        return await proceed()

    @hookimpl
    async def wrap_broker(self, call: BackendCall, proceed: Callable[[], Awaitable[Any]]) -> Any:
        self.backend.append(call)
        return await proceed()

    @hookimpl
    def wrap_asgi(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket"):
                self.http.append((scope["type"], scope["path"]))
            await app(scope, receive, send)

        return middleware

    @hookimpl
    def on_session_opened(self, session: Session) -> None:
        self.sessions.append(("open", session.protocol))

    @hookimpl
    def on_session_closed(self, session: Session) -> None:
        self.sessions.append(("close", session.protocol))

    @hookimpl
    def on_signin(self, event: dict[str, Any]) -> None:
        self.signins.append(event)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_telemetry_plugin_sees_commands_backends_requests_and_connections(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    recorder = Recorder()
    plugins = Plugins()
    plugins.register(recorder, name="recorder")
    config = make_test_config(tmp_path, mongo_storage, grpc={"port": _free_port()})
    async with serving(config, plugins) as (base, platform):
        async with JsonClient(base + "/ws") as client:
            with pytest.raises(ReplyError, match="Not signed in"):
                await client.call("query", collectionname="entities")
            await client.signin("admin", "admin")
            await client.call("insertone", collectionname="entities", item={"name": "a"})
            await client.call("query", collectionname="entities", query={"name": "a"})
            await client.call("registerqueue", queuename="telemetry")
            await client.call("queuemessage", queuename="telemetry", data={"x": 1})
            with pytest.raises(ReplyError, match="Unknown command"):
                await client.call("nosuchcommand")
        port = platform.config.section(GrpcConfig).port
        async with GrpcClient(f"127.0.0.1:{port}") as grpc:
            await grpc.signin("admin", "admin")
            await grpc.call("count", collectionname="entities", query={})
        async with httpx.AsyncClient() as http:
            assert (await http.get(base.replace("ws://", "http://") + "/healthz")).is_success
        await asyncio.sleep(0.2)  # the closes are told after the sockets went

    seen = [(c["command"], c["transport"], c["user"]) for c in recorder.commands]
    assert ("query", "json", None) in seen  # refused before sign-in: no caller
    assert ("signin", "json", None) in seen
    assert ("insertone", "json", "admin") in seen
    assert ("queuemessage", "json", "admin") in seen
    assert ("count", "grpc", "admin") in seen
    refused = [c for c in recorder.commands if c["error"]]
    assert {c["command"] for c in refused} == {"query", "nosuchcommand"}
    assert "Not signed in" in refused[0]["error"]
    assert all(c["seconds"] > 0 for c in recorder.commands)

    calls = {(c.backend, c.method, c.target) for c in recorder.backend}
    assert ("storage", "insert_one", "entities") in calls
    assert ("storage", "find", "entities") in calls
    assert ("storage", "count", "entities") in calls
    assert ("broker session", "declare_queue", "telemetry") in calls
    assert ("broker", "publish", "telemetry") in calls

    assert ("http", "/healthz") in recorder.http
    assert ("websocket", "/ws") in recorder.http
    assert ("open", "json") in recorder.sessions and ("close", "json") in recorder.sessions
    assert ("open", "grpc") in recorder.sessions
    assert [e["success"] for e in recorder.signins] == [True, True]


async def test_without_telemetry_plugins_nothing_is_wrapped(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    from iapflow.builtin.memory.broker import MemoryBroker
    from iapflow_mongo.storage import MongoStorage

    config = make_test_config(tmp_path, mongo_storage)
    async with serving(config) as (_base, platform):
        assert type(platform.storage) is MongoStorage
        assert type(platform.broker) is MemoryBroker
        assert platform.dispatcher._wrappers == []
