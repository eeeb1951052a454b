"""``listcollections``, ``createcollection``, ``dropcollection``."""

from __future__ import annotations

from typing import Any

from iapflow.dispatch import Request
from iapflow.secure import audit
from iapflow.wire import as_object, collection_name

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


def createcollection_in(data: dict[str, Any]) -> dict[str, Any]:
    """``CreateCollectionRequest`` has a plain flag where MongoDB takes ``{"enabled": true}``."""
    if data.pop("changeStreamPreAndPostImages", False):
        data["changeStreamPreAndPostImages"] = {"enabled": True}
    return data
