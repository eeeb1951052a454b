"""iapflow-hello, an example plugin: the ``hello`` command on every protocol, its ``[hello]``
config section and a page in the web interface.

``hello`` greets the caller (or ``name``) with the configured greeting, keeps each greeting as
a document in ``greetings`` through the secure data layer (so the caller's ACL applies: each
user sees their own) and answers with how many greetings the caller can see.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from iapflow import hookimpl
from iapflow.config import Section
from iapflow.dispatch import Proto, RegisterCommand, Request
from iapflow.errors import ApiError
from iapflow.web import RegisterUi
from iapflow_hello.hello_pb2 import HelloRequest, HelloResponse

GREETINGS = "greetings"


class HelloConfig(Section):
    """``[hello]``: how the plugin greets."""

    greeting: str = Field("Hello", min_length=1, max_length=40)
    max_name_length: int = Field(40, ge=1, le=200)


async def hello(request: Request) -> dict[str, Any]:
    """``hello``: ``{"name"?}`` -> ``{"result": "<greeting>, <name>!", "count": n}``."""
    config = request.platform.config.section(HelloConfig)
    name = request.data.get("name") or request.user.name
    if not isinstance(name, str) or len(name) > config.max_name_length:
        raise ApiError(f"name must be text of at most {config.max_name_length} characters")
    result = f"{config.greeting}, {name}!"
    data = request.platform.data
    await data.insert_one(request.user, GREETINGS, {"_type": "greeting", "name": name})
    count = await data.count(request.user, GREETINGS, {"_type": "greeting"})
    return {"result": result, "count": count}


@hookimpl
def register_config(register: Callable[[str, type[BaseModel]], None]) -> None:
    """``[hello]``."""
    register("hello", HelloConfig)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """``hello``, with its own protobuf messages so that it works on ``/ws/v2`` and gRPC."""
    register("hello", hello, proto=Proto("Hello", request=HelloRequest, response=HelloResponse))


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The Hello page."""
    register("hello", Path(__file__).parent / "ui", ["hello.js"])
