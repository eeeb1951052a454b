"""The work item commands (``addworkitemqueue`` ... ``deleteworkitem``) and their shapes in the
protobuf protocol. The rules live in :mod:`iapflow.builtin.workitems.service` and
``docs/workitems.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iapflow import jsonutil
from iapflow.builtin.workitems.service import WorkitemService
from iapflow.dispatch import Request
from iapflow.errors import ApiError
from iapflow.secure.acl import READ
from iapflow.stash import StashKey

if TYPE_CHECKING:
    from iapflow.platform import Platform

SERVICE = StashKey[WorkitemService]("work item service")


def service(platform: Platform) -> WorkitemService:
    """The platform's work item service (created at startup)."""
    found = platform.stash.get(SERVICE)
    if found is None:
        raise ApiError("work items are not available: the workitems plugin did not start")
    return found


async def addworkitemqueue(request: Request) -> dict[str, Any]:
    """Create a work item queue (and its ``<name> users`` role unless ``skiprole``)."""
    return {"result": await service(request.platform).add_queue(request.user, request.data)}


async def getworkitemqueue(request: Request) -> dict[str, Any]:
    """A work item queue by ``_id``/``wiqid`` or ``name``/``wiq`` (read right)."""
    return {"result": await service(request.platform).queue(request.user, request.data, READ)}


async def updateworkitemqueue(request: Request) -> dict[str, Any]:
    """Change a queue's settings; ``purge`` deletes all its items first (update right)."""
    return {"result": await service(request.platform).update_queue(request.user, request.data)}


async def deleteworkitemqueue(request: Request) -> dict[str, Any]:
    """Delete a queue (refused while it holds items unless ``purge``) and its users role."""
    await service(request.platform).delete_queue(request.user, request.data)
    return {}


async def addworkitem(request: Request) -> dict[str, Any]:
    """One new work item in queue ``wiq``/``wiqid`` (invoke right on the queue)."""
    data = request.data
    items = await service(request.platform).add_items(request.user, data, [data])
    data.pop("files", None)  # the reply carries the stored item, not the uploaded bytes
    return {"result": items[0]}


async def addworkitems(request: Request) -> dict[str, Any]:
    """Several new work items in one queue (``items``)."""
    data = request.data
    items = data.get("items")
    if not isinstance(items, list):
        raise ApiError("items must be a non-empty list of work items")
    added = await service(request.platform).add_items(request.user, data, items)
    data.pop("items", None)
    return {"items": added}


async def popworkitem(request: Request) -> dict[str, Any]:
    """The next due item of queue ``wiq``/``wiqid``, now ``processing``; none when empty."""
    item = await service(request.platform).pop(request.user, request.data)
    return {"result": item} if item is not None else {}


async def updateworkitem(request: Request) -> dict[str, Any]:
    """Set an item's state, payload and error fields (retries and chaining follow)."""
    data = request.data
    result = await service(request.platform).update_item(request.user, data)
    data.pop("files", None)
    return {"result": result}


async def deleteworkitem(request: Request) -> dict[str, Any]:
    """Delete a work item and its files (invoke on the queue, delete on the item)."""
    await service(request.platform).delete_item(request.user, request.data)
    return {}


# -- protobuf -----------------------------------------------------------------------------------

# WorkItemQueue fields the server sets itself; what a client sends back in them is ignored.
_SERVER_SET_QUEUE_FIELDS = (
    "_created", "_modified", "_createdby", "_createdbyid", "_modifiedby", "_modifiedbyid",
    "_version", "usersrole", "_workspaceid",
)  # fmt: skip


def workitemqueue_in(data: dict[str, Any]) -> dict[str, Any]:
    """``workitemqueue`` of the request, flattened as the JSON protocol sends it."""
    queue = data.pop("workitemqueue", None) or {}
    if isinstance(queue, dict):
        for key in _SERVER_SET_QUEUE_FIELDS:
            queue.pop(key, None)
        data = {**queue, **data}
    return data


def workitemqueue_out(reply: dict[str, Any]) -> dict[str, Any]:
    """The queue as the response's ``workitemqueue``."""
    return {"workitemqueue": reply.get("result")}


def workitem_out(reply: dict[str, Any]) -> dict[str, Any]:
    """The item as the response's ``workitem``."""
    return {"workitem": reply.get("result")}


def workitems_out(reply: dict[str, Any]) -> dict[str, Any]:
    """The items as the response's ``workitems``."""
    return {"workitems": reply.get("items") or []}


def updateworkitem_in(data: dict[str, Any]) -> dict[str, Any]:
    """``workitem`` of the request, flattened, its payload decoded; its stored files are not
    sent again (new ones come in ``files``)."""
    item = data.pop("workitem", None) or {}
    if isinstance(item, dict):
        if isinstance(item.get("payload"), str):
            item["payload"] = jsonutil.maybe_json(item["payload"])
        item.pop("files", None)
        data = {**item, **data}
    return data


def pushworkitems_in(data: dict[str, Any]) -> dict[str, Any]:
    """Each item's payload decoded."""
    for item in data.get("items") or []:
        if isinstance(item, dict) and isinstance(item.get("payload"), str):
            item["payload"] = jsonutil.maybe_json(item["payload"])
    return data
