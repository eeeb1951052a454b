"""Built-in plugin: OpenFlow's JSON websocket protocol on ``/``, ``/ws`` and ``/ws/v1``
(OpenRPA, ``@openiap/openflow-api``, Node-RED's iapflow nodes and the web interface)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute, WebSocketRoute

from iapflow import hookimpl
from iapflow.builtin.jsonws.connection import endpoint
from iapflow.platform import Platform

PATHS = ("/", "/ws", "/ws/v1")


@hookimpl
def register_routes(register: Callable[[BaseRoute], None]) -> None:
    """The JSON protocol's websocket paths."""
    for path in PATHS:
        register(WebSocketRoute(path, endpoint))


@hookimpl
def prepare(platform: Platform) -> None:
    """Tell clients reading ``/config`` where the JSON protocol is."""
    platform.public_config.setdefault("protocols", {})["json"] = list(PATHS)
