"""Built-in plugin: the OpenIAP protobuf protocol on websocket ``/ws/v2`` and on gRPC
(``openiap.FlowService``), for the official clients. Every command registered with a
:class:`iapflow.dispatch.Proto` mapping is reachable here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel
from starlette.routing import BaseRoute, WebSocketRoute

from iapflow import hookimpl
from iapflow.builtin.proto import websocket
from iapflow.builtin.proto.config import GrpcConfig
from iapflow.platform import Platform
from iapflow.stash import StashKey

if TYPE_CHECKING:  # imported lazily: grpc loads only when the gRPC port is on
    from iapflow.builtin.proto.grpcserver import GrpcServer

SERVER: StashKey[GrpcServer] = StashKey("gRPC server")


@hookimpl
def register_config(register: Callable[[str, type[BaseModel]], None]) -> None:
    """``[grpc]``."""
    register("grpc", GrpcConfig)


@hookimpl
def register_routes(register: Callable[[BaseRoute], None]) -> None:
    """``/ws/v2`` on the HTTP port."""
    register(WebSocketRoute(websocket.PATH, websocket.endpoint))


@hookimpl
def prepare(platform: Platform) -> None:
    """Tell clients reading ``/config`` where the protobuf protocol is."""
    protocols = platform.public_config.setdefault("protocols", {})
    protocols["proto"] = [websocket.PATH]
    port = platform.config.section(GrpcConfig).port
    if port:
        protocols["grpc"] = {"port": port}


@hookimpl
async def startup(platform: Platform) -> None:
    """Start the gRPC server unless ``[grpc] port`` is 0."""
    if not platform.config.section(GrpcConfig).port:
        return
    from iapflow.builtin.proto.grpcserver import GrpcServer

    server = GrpcServer(platform)
    await server.start()
    platform.stash[SERVER] = server


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Stop the gRPC server."""
    server = platform.stash.pop(SERVER)
    if server is not None:
        await server.stop()
