"""The ``signin`` command, and how it travels in the protobuf protocol."""

from __future__ import annotations

from typing import Any

from iapflow import __version__, jsonutil
from iapflow.dispatch import Proto, ProtoPush, Request
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
        "supports_watch": bool(platform.public_config.get("supports_watch")),
        "websocket_package_size": platform.config.websocket.package_size,
        "openflow_uniqueid": request.session.id if request.session else "",
        "enable_analytics": False,
        "version": __version__,
    }


def signin_in(data: dict[str, Any]) -> dict[str, Any]:
    """A ``SigninRequest`` in the JSON protocol's words."""
    if data.pop("validateonly", False):
        data["validate_only"] = True
    for proto_name, json_name in (("agent", "clientagent"), ("version", "clientversion")):
        if proto_name in data:
            data[json_name] = data.pop(proto_name)
    data.pop("ping", None)
    return data


def signin_out(reply: dict[str, Any]) -> dict[str, Any]:
    """The ``SigninResponse``: what the JSON reply has at its top level goes in ``config``."""
    config = {
        key: reply[key]
        for key in ("supports_watch", "websocket_package_size", "version", "openflow_uniqueid")
        if key in reply
    }
    return {"jwt": reply.get("jwt"), "user": reply.get("user"), "config": jsonutil.dumps(config)}


def refreshtoken(data: dict[str, Any]) -> dict[str, Any]:
    """The ``RefreshToken`` push of a renewed token."""
    user = data.get("user") or {}
    return {"jwt": data.get("jwt"), "user": user, "username": user.get("username")}


PROTO = Proto(
    "Signin",
    to_dict=signin_in,
    from_reply=signin_out,
    pushes=(("refreshtoken", ProtoPush("refreshtoken", "RefreshToken", refreshtoken)),),
)
