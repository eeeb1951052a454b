"""Built-in plugin: the ``signin`` command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iapflow import __version__, hookimpl
from iapflow.dispatch import Request
from iapflow.errors import ApiError


async def signin(request: Request) -> dict[str, Any]:
    """Sign in with ``username``/``password`` or ``jwt``; binds the connection unless
    ``validate_only``; supports ``longtoken`` and ``impersonate``."""
    data = request.data
    platform = request.platform
    remote = request.session.remote if request.session else {}
    for key in ("username", "password", "jwt", "impersonate"):
        if data.get(key) is not None and not isinstance(data[key], str | bool):
            raise ApiError(f"signin: {key} must be a string")
    result = await platform.auth.signin(data, remote)
    if request.session is not None and not data.get("validate_only"):
        request.session.bind(
            result, str(data.get("clientagent") or ""), str(data.get("clientversion") or "")
        )
    return {
        "jwt": result.jwt,
        "user": result.principal.token_user(),
        "supports_watch": platform.dispatcher.commands.get("watch") is not None,
        "websocket_package_size": platform.config.websocket.package_size,
        "openflow_uniqueid": request.session.id if request.session else "",
        "enable_analytics": False,
        "version": __version__,
    }


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """Provide ``signin``."""
    register("signin", signin, signed_in=False)
