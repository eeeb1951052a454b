"""Built-in plugin: ``listcollections``, ``createcollection``, ``dropcollection``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iapflow import hookimpl
from iapflow.data.query import as_object, collection_name
from iapflow.dispatch import Request

# createcollection keys that are not store options.
_NOT_OPTIONS = ("collectionname", "jwt", "priority", "traceId", "spanId", "id")


async def listcollections(request: Request) -> dict[str, Any]:
    """Collections, without ``*_hist`` and ``*.chunks`` unless ``includehist``."""
    result = await request.platform.data.list_collections(
        request.user, bool(request.data.get("includehist"))
    )
    return {"result": result}


async def createcollection(request: Request) -> dict[str, Any]:
    """Create a collection (admins); other data keys are store options such as ``timeseries``."""
    name = collection_name(request.data.get("collectionname"))
    options = {k: v for k, v in request.data.items() if k not in _NOT_OPTIONS}
    if "options" in options:
        options = as_object(options["options"], "options") or {}
    await request.platform.data.create_collection(request.user, name, options)
    return {}


async def dropcollection(request: Request) -> dict[str, Any]:
    """Drop a collection and its history (admins)."""
    name = collection_name(request.data.get("collectionname"))
    await request.platform.data.drop_collection(request.user, name)
    return {}


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """Provide the collection commands."""
    register("listcollections", listcollections)
    register("createcollection", createcollection)
    register("dropcollection", dropcollection)
