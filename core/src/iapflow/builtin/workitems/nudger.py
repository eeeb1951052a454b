"""Nudges consumers of work item queues: when items of a queue with an ``amqpqueue`` are
waiting (after an add, when a retried item becomes due, and on a periodic sweep for items that
became due otherwise), the server sends ``{wiq, wiqid, packageid}`` as a queue message to that
``amqpqueue``, so that robots and agents listening there pop work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from iapflow.builtin.queues import commands as queue_commands
from iapflow.builtin.queues.config import QueuesConfig
from iapflow.builtin.workitems.parse import SERVER
from iapflow.builtin.workitems.service import WorkitemService
from iapflow.contracts.storage import Document
from iapflow.errors import IapflowError
from iapflow.ids import new_id

if TYPE_CHECKING:
    from iapflow.platform import Platform

log = logging.getLogger("iapflow.workitems")

MONITOR_INTERVAL_SECONDS = 10.0
"""How often the sweep looks for queues with due items to nudge (OpenFlow's default)."""
NUDGE_GAP_SECONDS = 0.5
"""At most one nudge per queue in this time; adds in between share the next one."""


class Nudger:
    """Sends the "items waiting" queue message to a work item queue's ``amqpqueue``."""

    def __init__(self, platform: Platform, workitems: WorkitemService) -> None:
        self.platform = platform
        self.workitems = workitems
        workitems.nudge = self.nudge
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
                SERVER,
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
                expiration_ms=self.platform.config.section(QueuesConfig).default_expiration_ms,
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
