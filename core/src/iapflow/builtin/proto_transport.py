"""Built-in plugin: the OpenIAP protobuf protocol on websocket ``/ws/v2`` and on gRPC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import WebSocketRoute

from iapflow import hookimpl
from iapflow.platform import Platform
from iapflow.transports import protows

_servers: dict[int, Any] = {}


@hookimpl
def register_routes(register: Callable[[Any], None]) -> None:
    """``/ws/v2`` on the HTTP port."""
    register(WebSocketRoute(protows.PATH, protows.endpoint))


@hookimpl
async def startup(platform: Platform) -> None:
    """Start the gRPC server unless ``[grpc] port`` is 0."""
    if not platform.config.grpc.port:
        return
    from iapflow.transports.protogrpc import GrpcServer

    server = GrpcServer(platform)
    await server.start()
    _servers[id(platform)] = server


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Stop the gRPC server."""
    server = _servers.pop(id(platform), None)
    if server is not None:
        await server.stop()
