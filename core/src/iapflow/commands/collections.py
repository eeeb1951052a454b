"""Built-in plugin: ``listcollections``, ``createcollection``, ``dropcollection``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iapflow import audit, hookimpl
from iapflow.data.query import as_object, collection_name
from iapflow.dispatch import Request

# MongoDB create options a client may pass, at the top level of data or inside ``options``.
CREATE_OPTIONS = frozenset(
    {
        "timeseries",
        "expireAfterSeconds",
        "capped",
        "size",
        "max",
        "validator",
        "validationLevel",
        "validationAction",
        "collation",
        "changeStreamPreAndPostImages",
        "clusteredIndex",
    }
)


async def listcollections(request: Request) -> dict[str, Any]:
    """Collections, without ``*_hist`` and ``*.chunks`` unless ``includehist``."""
    result = await request.platform.data.list_collections(
        request.user, bool(request.data.get("includehist"))
    )
    return {"result": result}


async def createcollection(request: Request) -> dict[str, Any]:
    """Create a collection (admins). MongoDB create options (:data:`CREATE_OPTIONS`, such as
    ``timeseries`` or ``expireAfterSeconds``) may sit in ``data`` or in ``data.options``."""
    name = collection_name(request.data.get("collectionname"))
    given = as_object(request.data.get("options"), "options") or {}
    options = {k: v for k, v in {**request.data, **given}.items() if k in CREATE_OPTIONS}
    await request.platform.data.create_collection(request.user, name, options)
    await audit.record_action(
        request.platform,
        request.user,
        "collection",
        f"create {name}",
        action="create",
        collection=name,
    )
    return {}


async def dropcollection(request: Request) -> dict[str, Any]:
    """Drop a collection and its history (admins)."""
    name = collection_name(request.data.get("collectionname"))
    await request.platform.data.drop_collection(request.user, name)
    await audit.record_action(
        request.platform, request.user, "collection", f"drop {name}", action="drop", collection=name
    )
    return {}


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """Provide the collection commands."""
    register("listcollections", listcollections)
    register("createcollection", createcollection)
    register("dropcollection", dropcollection)
