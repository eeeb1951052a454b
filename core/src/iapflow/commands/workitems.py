"""Built-in plugin: work item queues (``addworkitemqueue`` ... ``deleteworkitem``).

The rules live in :mod:`iapflow.data.workitems` and ``docs/workitems.md``. This plugin also
nudges consumers: when items of a queue with an ``amqpqueue`` are waiting (after an add, when a
retried item becomes due, and on a periodic sweep for items that became due otherwise), the
server sends ``{wiq, wiqid, packageid}`` as a queue message to that ``amqpqueue``, so that
robots and agents listening there pop work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iapflow import hookimpl, wellknown
from iapflow.commands import queues as queue_commands
from iapflow.data.workitems import MQ, WORKITEMS, QueueRules, WorkitemRules, WorkitemService
from iapflow.dispatch import Request
from iapflow.errors import ApiError, IapflowError
from iapflow.ids import new_id
from iapflow.security.acl import READ
from iapflow.security.principal import Principal
from iapflow.storage import Document

if TYPE_CHECKING:
    from iapflow.platform import Platform

log = logging.getLogger("iapflow.workitems")

STATE_KEY = "workitems"
MONITOR_INTERVAL_SECONDS = 10.0
"""How often the sweep looks for queues with due items to nudge (OpenFlow's default)."""
NUDGE_GAP_SECONDS = 0.5
"""At most one nudge per queue in this time; adds in between share the next one."""
_SERVER = Principal(id=wellknown.ROOT, name="root", username="root")


def service(platform: Platform) -> WorkitemService:
    """The platform's work item service (created at startup)."""
    found = platform.state.get(STATE_KEY)
    if not isinstance(found, Nudger):
        raise ApiError("work items are not available: the workitems plugin did not start")
    return found.workitems


class Nudger:
    """Sends the "items waiting" queue message to a work item queue's ``amqpqueue``."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.workitems = WorkitemService(platform)
        self.workitems.nudge = self.nudge
        self._last: dict[str, float] = {}
        self._scheduled: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.Task[None] | None = None

    def nudge(self, queue: Document, delay: float = 0.0) -> None:
        """Nudge ``queue``'s consumers now (or in ``delay`` seconds), at most once per
        :data:`NUDGE_GAP_SECONDS`."""
        amqpqueue = queue.get("amqpqueue")
        if not isinstance(amqpqueue, str) or not amqpqueue:
            return
        key = str(queue["_id"])
        wait = max(delay, self._last.get(key, 0.0) + NUDGE_GAP_SECONDS - time.monotonic())
        if wait <= 0:
            self._send_soon(queue)
            return
        if key in self._scheduled:
            return
        loop = asyncio.get_running_loop()
        self._scheduled[key] = loop.call_later(wait, self._fire, queue)

    def _fire(self, queue: Document) -> None:
        self._scheduled.pop(str(queue["_id"]), None)
        self._send_soon(queue)

    def _send_soon(self, queue: Document) -> None:
        self._last[str(queue["_id"])] = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._send(queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, queue: Document) -> None:
        try:
            queues = queue_commands.service(self.platform)
            await queues.send(
                _SERVER,
                queue=str(queue["amqpqueue"]).strip().lower(),
                exchange="",
                routing_key="",
                payload={
                    "wiq": queue.get("name"),
                    "wiqid": queue["_id"],
                    "packageid": queue.get("packageid") or "",
                },
                reply_to="",
                correlation_id=new_id(),
                expiration_ms=self.platform.config.queues.default_expiration_ms,
                headers={},
            )
        except (IapflowError, OSError) as exc:
            log.info(
                "could not nudge %s of work item queue %s: %s",
                queue.get("amqpqueue"),
                queue.get("name"),
                exc,
            )

    def start(self) -> None:
        """Start the periodic sweep."""
        self._monitor = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_SECONDS)
            try:
                for queue in await self.workitems.waiting_queues():
                    self.nudge(queue)
            except Exception:
                log.exception("work item queue sweep failed")

    async def stop(self) -> None:
        """Stop the sweep and pending nudges."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for handle in self._scheduled.values():
            handle.cancel()
        self._scheduled.clear()
        for task in list(self._tasks):
            task.cancel()


# -- commands ----------------------------------------------------------------------------------


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


@hookimpl
def register_collection_rules(register: Callable[[str, Any], None]) -> None:
    """Items and queues change only through the work item commands."""
    register(WORKITEMS, WorkitemRules)
    register(MQ, lambda _platform: QueueRules())


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """The work item commands (``pushworkitem(s)`` are the protobuf names of ``addworkitem(s)``)."""
    register("addworkitemqueue", addworkitemqueue)
    register("getworkitemqueue", getworkitemqueue)
    register("updateworkitemqueue", updateworkitemqueue)
    register("deleteworkitemqueue", deleteworkitemqueue)
    register("addworkitem", addworkitem, aliases=("pushworkitem",))
    register("addworkitems", addworkitems, aliases=("pushworkitems",))
    register("popworkitem", popworkitem)
    register("updateworkitem", updateworkitem)
    register("deleteworkitem", deleteworkitem)


@hookimpl
async def startup(platform: Platform) -> None:
    """Indexes for pops and lookups; start the nudge sweep."""
    nudger = Nudger(platform)
    await nudger.workitems.ensure_indexes()
    platform.state[STATE_KEY] = nudger
    nudger.start()


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Stop the sweep."""
    found = platform.state.pop(STATE_KEY, None)
    if isinstance(found, Nudger):
        await found.stop()
