"""Helpers the security tests share (imported as ``attack``)."""

from __future__ import annotations

import base64
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iapflow.testing import JsonClient, ReplyError
from iapflow.testing.grpc_client import GrpcClient

Client = JsonClient | GrpcClient
Login = Callable[..., Awaitable[Client]]
NewUser = Callable[..., Awaitable[str]]

# What no error may show a client: the store's own names and messages.
STORE_INTERNALS = ("E11000", "dup key", "index:", "collection:", "full error", "keyValue")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def result(reply: dict[str, Any]) -> Any:
    """A reply's ``result`` (JSON protocol) or ``results`` (the protobuf messages' name)."""
    return reply["result"] if "result" in reply else reply.get("results")


async def refused(client: Client, command: str, **data: Any) -> str:
    """Call ``command``, which must be refused; return the error message."""
    with pytest.raises(ReplyError) as caught:
        await client.call(command, **data)
    message = str(caught.value)
    assert message and message != "None"
    return message


def uid(client: Client) -> str:
    """The signed-in user's id."""
    return str(client.user["_id"])


def operator_update(client: Client, collection: str, query: Any, update: Any) -> dict[str, Any]:
    """The fields of an ``updatedocument`` (updatemany) call on either transport."""
    field = "document" if isinstance(client, GrpcClient) else "item"
    return {"collectionname": collection, "query": query, field: update}


def b64(data: bytes) -> str:
    """``data`` as base64 text."""
    return base64.b64encode(data).decode()


async def bobs_item(two: dict[str, Any], files: list[dict[str, Any]] | None = None) -> Any:
    """A new item in bob's queue of the ``two`` fixture."""
    reply = await two["bob_json"].call(
        "addworkitem", wiqid=two["bq"]["_id"], name="mine", payload={"n": 1}, files=files or []
    )
    return reply["result"]
