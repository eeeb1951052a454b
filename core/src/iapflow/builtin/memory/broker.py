"""The in-process broker: RabbitMQ's queue semantics inside one server process.

Named queues and their waiting messages are written to an append-only log in the data
directory (``broker/queues.jsonl``), flushed on every write, and read back (then compacted) at
start, so messages waiting in named queues survive a restart. Temporary queues, exchanges and
bindings live in memory only, as they belong to live connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iapflow.builtin.memory.state import (
    LOG_NAME,
    Binding,
    ConsumerSlot,
    MemoryExchange,
    MemoryQueue,
    QueueLog,
    Stored,
)
from iapflow.contracts.broker import (
    EXCHANGE_TYPES,
    Broker,
    BrokerContext,
    BrokerError,
    BrokerSession,
    Conflict,
    Consumer,
    Delivery,
    LostCallback,
    NotFound,
    OutgoingMessage,
    timeout_body,
)

log = logging.getLogger("iapflow.memory")


class MemoryDelivery(Delivery):
    def __init__(
        self, broker: MemoryBroker, stored: Stored, queue: MemoryQueue, consumer: ConsumerSlot
    ) -> None:
        self.queue = queue.name
        self.body = stored.body
        self.reply_to = stored.reply_to
        self.correlation_id = stored.correlation_id
        self.routing_key = stored.routing_key
        self.exchange = stored.exchange
        self.consumer_tag = consumer.tag
        self.headers = stored.headers
        self.redelivered = stored.redelivered
        self._broker = broker
        self._stored = stored
        self._queue = queue
        self._consumer = consumer
        self._settled = False

    def settle(self, requeue: bool | None) -> None:
        """``None`` acks; ``True`` requeues; ``False`` dead-letters."""
        if self._settled:
            return
        self._settled = True
        self._consumer.inflight -= 1
        self._consumer.session.unacked.pop(id(self), None)
        self._broker._settled(self._queue, self._stored, requeue)

    async def ack(self) -> None:
        self.settle(None)

    async def nack(self, requeue: bool = True) -> None:
        self.settle(requeue)


class MemorySession(BrokerSession):
    def __init__(self, broker: MemoryBroker, prefetch: int) -> None:
        self.broker = broker
        self.prefetch = max(1, prefetch)
        self.consumers: dict[str, ConsumerSlot] = {}
        self.temporary: set[str] = set()
        self.unacked: dict[int, MemoryDelivery] = {}
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise BrokerError("the connection's broker session is closed")

    async def declare_queue(self, name: str, *, temporary: bool) -> None:
        self._check_open()
        self.broker._declare_queue(name, self if temporary else None)

    async def consume(self, queue: str, consumer: Consumer) -> str:
        self._check_open()
        found = self.broker._queues.get(queue)
        if found is None:
            raise NotFound(f"queue {queue!r} does not exist")
        old = self.consumers.pop(queue, None)
        if old is not None:
            self.broker._remove_consumer(old)
        tag = f"ctag-{next(self.broker._tags)}"
        entry = ConsumerSlot(tag, found, consumer, self)
        self.consumers[queue] = entry
        found.consumers.append(entry)
        self.broker._dispatch(found)
        return tag

    async def cancel(self, queue: str) -> bool:
        entry = self.consumers.pop(queue, None)
        if entry is not None:
            self.broker._remove_consumer(entry)
        if queue in self.temporary:
            self.temporary.discard(queue)
            self.broker._delete_queue(queue)
        return entry is not None

    async def declare_exchange(self, name: str, kind: str) -> None:
        self._check_open()
        self.broker._declare_exchange(name, kind)

    async def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self._check_open()
        found = self.broker._exchanges.get(exchange)
        if found is None:
            raise NotFound(f"exchange {exchange!r} does not exist")
        if queue not in self.broker._queues:
            raise NotFound(f"queue {queue!r} does not exist")
        binding = Binding(queue, routing_key, dict(arguments or {}))
        if binding not in found.bindings:
            found.bindings.append(binding)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for entry in list(self.consumers.values()):
            self.broker._remove_consumer(entry)
        self.consumers.clear()
        for delivery in list(self.unacked.values()):
            delivery.settle(True)
        for name in list(self.temporary):
            self.broker._delete_queue(name)
        self.temporary.clear()
        self.broker._sessions.discard(self)


class MemoryBroker(Broker):
    """RabbitMQ's semantics in process; see the module docstring for what persists."""

    def __init__(self, data_dir: Path | None) -> None:
        self._log = QueueLog(data_dir / "broker" / LOG_NAME) if data_dir is not None else None
        self._queues: dict[str, MemoryQueue] = {}
        self._exchanges: dict[str, MemoryExchange] = {}
        self._sessions: set[MemorySession] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tags = itertools.count(1)
        self._ids = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._log is None:
            return
        try:
            saved, last_id = self._log.load()
            self._ids = itertools.count(last_id + 1)
            for name, messages in saved.items():
                queue = self._queues[name] = MemoryQueue(name, None)
                queue.ready.extend(sorted(messages, key=lambda m: m.id))
            self._log.open(self._queues, [])
        except OSError as exc:
            raise BrokerError(f"cannot use the broker log {self._log.path}: {exc}") from exc
        now = time.time()
        for queue in self._queues.values():
            self._expire(queue.name, now)

    async def stop(self) -> None:
        for session in list(self._sessions):
            await session.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._log is not None:
            self._log.close()

    async def open_session(self, lost: LostCallback, prefetch: int = 25) -> BrokerSession:
        session = MemorySession(self, prefetch)
        self._sessions.add(session)
        return session

    # -- queues and exchanges -------------------------------------------------------------------

    def _declare_queue(self, name: str, owner: MemorySession | None) -> None:
        if not name:
            raise BrokerError("a queue needs a name")
        if name in self._queues:
            return
        self._queues[name] = MemoryQueue(name, owner)
        if owner is not None:
            owner.temporary.add(name)
        elif self._log is not None:
            self._log.declared(name)

    def _declare_exchange(self, name: str, kind: str) -> None:
        if kind not in EXCHANGE_TYPES:
            raise BrokerError(f"unknown exchange type {kind!r}; use one of {EXCHANGE_TYPES}")
        found = self._exchanges.get(name)
        if found is None:
            self._exchanges[name] = MemoryExchange(name, kind)
        elif found.kind != kind:
            raise Conflict(f"exchange {name!r} exists with type {found.kind!r}, not {kind!r}")

    def _delete_queue(self, name: str) -> None:
        queue = self._queues.pop(name, None)
        if queue is None:
            return
        for exchange in self._exchanges.values():
            exchange.bindings = [b for b in exchange.bindings if b.queue != name]
        for entry in list(queue.consumers):
            entry.session.consumers.pop(name, None)
        queue.consumers.clear()
        if queue.owner is not None:
            queue.owner.temporary.discard(name)
        elif self._log is not None:
            self._log.deleted(name)
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _remove_consumer(self, entry: ConsumerSlot) -> None:
        with contextlib.suppress(ValueError):
            entry.queue.consumers.remove(entry)

    async def queue_exists(self, name: str) -> bool:
        return name in self._queues

    async def exchange_exists(self, name: str) -> bool:
        return name in self._exchanges

    async def delete_queue(self, name: str) -> None:
        self._delete_queue(name)

    # -- publishing -----------------------------------------------------------------------------

    async def publish(
        self,
        message: OutgoingMessage,
        *,
        queue: str = "",
        exchange: str = "",
        routing_key: str = "",
    ) -> bool:
        headers = dict(message.headers)
        if exchange:
            found = self._exchanges.get(exchange)
            if found is None:
                raise NotFound(f"exchange {exchange!r} does not exist")
            targets = found.targets(routing_key, headers)
        else:
            routing_key = queue or routing_key
            targets = [routing_key] if routing_key in self._queues else []
        expires_at = None
        if message.expiration_ms is not None:
            expires_at = time.time() + message.expiration_ms / 1000
        if not targets:
            self._dead_letter(message.body, message.reply_to, message.correlation_id)
            return False
        for name in targets:
            stored = Stored(
                next(self._ids),
                message.body,
                message.reply_to,
                message.correlation_id,
                routing_key,
                exchange,
                headers,
                expires_at,
            )
            self._enqueue(self._queues[name], stored)
        return True

    def _enqueue(self, queue: MemoryQueue, stored: Stored) -> None:
        queue.ready.append(stored)
        if queue.durable and self._log is not None:
            self._log.put(queue.name, stored)
        if stored.expires_at is not None:
            self._schedule_expiry(queue.name, stored.expires_at)
        self._dispatch(queue)

    def _schedule_expiry(self, name: str, at: float) -> None:
        loop = asyncio.get_running_loop()
        current = self._timers.get(name)
        delay = max(at - time.time(), 0) + 0.001
        if current is not None and current.when() <= loop.time() + delay:
            return
        if current is not None:
            current.cancel()
        self._timers[name] = loop.call_later(delay, self._expire, name, None)

    def _expire(self, name: str, now: float | None) -> None:
        self._timers.pop(name, None)
        queue = self._queues.get(name)
        if queue is None:
            return
        now = time.time() if now is None else now
        keep: deque[Stored] = deque()
        dead: list[Stored] = []
        for stored in queue.ready:
            (dead if stored.expired(now) else keep).append(stored)
        queue.ready = keep
        for stored in dead:
            self._drop(queue, stored)
            self._dead_letter(stored.body, stored.reply_to, stored.correlation_id)
        later = [s.expires_at for s in keep if s.expires_at is not None]
        if later:
            self._schedule_expiry(name, min(later))

    def _drop(self, queue: MemoryQueue, stored: Stored) -> None:
        if queue.durable and self._log is not None:
            self._log.removed(stored)

    def _dead_letter(self, body: bytes, reply_to: str, correlation_id: str) -> None:
        """A request that expired or found no queue: a ``timeout`` to its reply queue."""
        target = self._queues.get(reply_to) if reply_to else None
        if target is None:
            return
        stored = Stored(next(self._ids), timeout_body(body), "", correlation_id, reply_to)
        self._enqueue(target, stored)

    # -- delivering -----------------------------------------------------------------------------

    def _next_consumer(self, queue: MemoryQueue) -> ConsumerSlot | None:
        count = len(queue.consumers)
        for step in range(count):
            index = (queue.next_consumer + step) % count
            entry = queue.consumers[index]
            if entry.inflight < entry.session.prefetch:
                queue.next_consumer = index + 1
                return entry
        return None

    def _dispatch(self, queue: MemoryQueue) -> None:
        now = time.time()
        while queue.ready:
            entry = self._next_consumer(queue)
            if entry is None:
                return
            stored = queue.ready.popleft()
            if stored.expired(now):
                self._drop(queue, stored)
                self._dead_letter(stored.body, stored.reply_to, stored.correlation_id)
                continue
            delivery = MemoryDelivery(self, stored, queue, entry)
            entry.inflight += 1
            entry.session.unacked[id(delivery)] = delivery
            task = asyncio.get_running_loop().create_task(self._deliver(entry, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry: ConsumerSlot, delivery: MemoryDelivery) -> None:
        try:
            await entry.callback(delivery)
        except Exception:
            log.exception("consumer of %s failed; requeueing", delivery.queue)
            delivery.settle(True)

    def _settled(self, queue: MemoryQueue, stored: Stored, requeue: bool | None) -> None:
        live = self._queues.get(queue.name) is queue
        if requeue and live:
            stored.redelivered = True
            queue.ready.appendleft(stored)
        else:
            if live:
                self._drop(queue, stored)
            if requeue is False:
                self._dead_letter(stored.body, stored.reply_to, stored.correlation_id)
        if live:
            self._dispatch(queue)


def build_memory_broker(options: Mapping[str, Any], context: BrokerContext) -> MemoryBroker:
    """The ``memory`` backend factory; ``persist = false`` keeps named queues in memory only."""
    unknown = set(options) - {"persist"}
    if unknown:
        from iapflow.errors import ConfigError

        raise ConfigError(
            f"messaging.{sorted(unknown)[0]}", "unknown key for the memory broker (known: persist)"
        )
    persist = options.get("persist", True)
    if isinstance(persist, str) and persist.lower() in ("true", "false"):
        persist = persist.lower() == "true"
    if not isinstance(persist, bool):
        from iapflow.errors import ConfigError

        raise ConfigError("messaging.persist", f"must be true or false (got {persist!r})")
    return MemoryBroker(context.data_dir if persist else None)
