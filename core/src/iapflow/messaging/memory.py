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
import json
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from iapflow.messaging.broker import (
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
    headers_match,
    timeout_body,
    topic_matches,
)

log = logging.getLogger("iapflow.messaging.memory")

LOG_NAME = "queues.jsonl"


@dataclass
class _Stored:
    id: int
    body: bytes
    reply_to: str = ""
    correlation_id: str = ""
    routing_key: str = ""
    exchange: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None
    redelivered: bool = False

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        return {
            "b": self.body.decode("utf-8", "surrogateescape"),
            "r": self.reply_to,
            "c": self.correlation_id,
            "k": self.routing_key,
            "e": self.exchange,
            "h": self.headers,
            "x": self.expires_at,
        }

    @classmethod
    def from_json(cls, message_id: int, data: Mapping[str, Any]) -> _Stored:
        return cls(
            id=message_id,
            body=str(data.get("b", "")).encode("utf-8", "surrogateescape"),
            reply_to=str(data.get("r", "")),
            correlation_id=str(data.get("c", "")),
            routing_key=str(data.get("k", "")),
            exchange=str(data.get("e", "")),
            headers=dict(data.get("h") or {}),
            expires_at=data.get("x"),
            redelivered=True,
        )


class _Consumer:
    def __init__(self, tag: str, queue: _Queue, callback: Consumer, session: _MemorySession):
        self.tag = tag
        self.queue = queue
        self.callback = callback
        self.session = session
        self.inflight = 0


class _Queue:
    def __init__(self, name: str, owner: _MemorySession | None) -> None:
        self.name = name
        self.owner = owner
        self.ready: deque[_Stored] = deque()
        self.consumers: list[_Consumer] = []
        self.next_consumer = 0

    @property
    def durable(self) -> bool:
        return self.owner is None


@dataclass
class _Binding:
    queue: str
    routing_key: str
    arguments: dict[str, Any]


@dataclass
class _Exchange:
    name: str
    kind: str
    bindings: list[_Binding] = field(default_factory=list)

    def targets(self, routing_key: str, headers: Mapping[str, Any]) -> list[str]:
        found: list[str] = []
        for b in self.bindings:
            if self.kind == "fanout":
                hit = True
            elif self.kind == "direct":
                hit = b.routing_key == routing_key
            elif self.kind == "topic":
                hit = topic_matches(b.routing_key, routing_key)
            else:
                hit = headers_match(b.arguments, headers)
            if hit and b.queue not in found:
                found.append(b.queue)
        return found


class _MemoryDelivery(Delivery):
    def __init__(
        self, broker: MemoryBroker, stored: _Stored, queue: _Queue, consumer: _Consumer
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


class _MemorySession(BrokerSession):
    def __init__(self, broker: MemoryBroker, prefetch: int) -> None:
        self.broker = broker
        self.prefetch = max(1, prefetch)
        self.consumers: dict[str, _Consumer] = {}
        self.temporary: set[str] = set()
        self.unacked: dict[int, _MemoryDelivery] = {}
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
        entry = _Consumer(tag, found, consumer, self)
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
        binding = _Binding(queue, routing_key, dict(arguments or {}))
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


class _QueueLog:
    """Append-only record of named queues and the messages waiting in them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def load(self) -> tuple[dict[str, list[_Stored]], int]:
        queues: dict[str, dict[int, _Stored]] = {}
        where: dict[int, str] = {}
        last_id = 0
        if self.path.exists():
            with self.path.open(encoding="utf-8") as file:
                for line in file:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        log.warning("skipping a torn line in %s", self.path)
                        continue
                    if "q" in record and "p" not in record:
                        queues.setdefault(record["q"], {})
                    elif "d" in record:
                        for message_id in queues.pop(record["d"], {}):
                            where.pop(message_id, None)
                    elif "p" in record:
                        message_id = int(record["p"])
                        last_id = max(last_id, message_id)
                        queues.setdefault(record["q"], {})[message_id] = _Stored.from_json(
                            message_id, record["m"]
                        )
                        where[message_id] = record["q"]
                    elif "a" in record:
                        name = where.pop(int(record["a"]), None)
                        if name is not None:
                            queues.get(name, {}).pop(int(record["a"]), None)
        return {name: list(messages.values()) for name, messages in queues.items()}, last_id

    def open(self, queues: Mapping[str, _Queue], unacked: list[tuple[str, _Stored]]) -> None:
        """Rewrite the log compactly from the current state and keep it open for appends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as file:
            for queue in queues.values():
                if queue.durable:
                    file.write(json.dumps({"q": queue.name}) + "\n")
                    for stored in queue.ready:
                        file.write(self._put(queue.name, stored))
            for name, stored in unacked:
                file.write(self._put(name, stored))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)
        self._file = self.path.open("a", encoding="utf-8")

    @staticmethod
    def _put(queue: str, stored: _Stored) -> str:
        return json.dumps({"p": stored.id, "q": queue, "m": stored.to_json()}) + "\n"

    def _write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line)
            self._file.flush()

    def declared(self, queue: str) -> None:
        self._write(json.dumps({"q": queue}) + "\n")

    def deleted(self, queue: str) -> None:
        self._write(json.dumps({"d": queue}) + "\n")

    def put(self, queue: str, stored: _Stored) -> None:
        self._write(self._put(queue, stored))

    def removed(self, stored: _Stored) -> None:
        self._write(json.dumps({"a": stored.id}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MemoryBroker(Broker):
    """RabbitMQ's semantics in process; see the module docstring for what persists."""

    def __init__(self, data_dir: Path | None) -> None:
        self._log = _QueueLog(data_dir / "broker" / LOG_NAME) if data_dir is not None else None
        self._queues: dict[str, _Queue] = {}
        self._exchanges: dict[str, _Exchange] = {}
        self._sessions: set[_MemorySession] = set()
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
                queue = self._queues[name] = _Queue(name, None)
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
        session = _MemorySession(self, prefetch)
        self._sessions.add(session)
        return session

    # -- queues and exchanges -------------------------------------------------------------------

    def _declare_queue(self, name: str, owner: _MemorySession | None) -> None:
        if not name:
            raise BrokerError("a queue needs a name")
        if name in self._queues:
            return
        self._queues[name] = _Queue(name, owner)
        if owner is not None:
            owner.temporary.add(name)
        elif self._log is not None:
            self._log.declared(name)

    def _declare_exchange(self, name: str, kind: str) -> None:
        if kind not in EXCHANGE_TYPES:
            raise BrokerError(f"unknown exchange type {kind!r}; use one of {EXCHANGE_TYPES}")
        found = self._exchanges.get(name)
        if found is None:
            self._exchanges[name] = _Exchange(name, kind)
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

    def _remove_consumer(self, entry: _Consumer) -> None:
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
            stored = _Stored(
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

    def _enqueue(self, queue: _Queue, stored: _Stored) -> None:
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
        keep: deque[_Stored] = deque()
        dead: list[_Stored] = []
        for stored in queue.ready:
            (dead if stored.expired(now) else keep).append(stored)
        queue.ready = keep
        for stored in dead:
            self._drop(queue, stored)
            self._dead_letter(stored.body, stored.reply_to, stored.correlation_id)
        later = [s.expires_at for s in keep if s.expires_at is not None]
        if later:
            self._schedule_expiry(name, min(later))

    def _drop(self, queue: _Queue, stored: _Stored) -> None:
        if queue.durable and self._log is not None:
            self._log.removed(stored)

    def _dead_letter(self, body: bytes, reply_to: str, correlation_id: str) -> None:
        """A request that expired or found no queue: a ``timeout`` to its reply queue."""
        target = self._queues.get(reply_to) if reply_to else None
        if target is None:
            return
        stored = _Stored(next(self._ids), timeout_body(body), "", correlation_id, reply_to)
        self._enqueue(target, stored)

    # -- delivering -----------------------------------------------------------------------------

    def _next_consumer(self, queue: _Queue) -> _Consumer | None:
        count = len(queue.consumers)
        for step in range(count):
            index = (queue.next_consumer + step) % count
            entry = queue.consumers[index]
            if entry.inflight < entry.session.prefetch:
                queue.next_consumer = index + 1
                return entry
        return None

    def _dispatch(self, queue: _Queue) -> None:
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
            delivery = _MemoryDelivery(self, stored, queue, entry)
            entry.inflight += 1
            entry.session.unacked[id(delivery)] = delivery
            task = asyncio.get_running_loop().create_task(self._deliver(entry, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry: _Consumer, delivery: _MemoryDelivery) -> None:
        try:
            await entry.callback(delivery)
        except Exception:
            log.exception("consumer of %s failed; requeueing", delivery.queue)
            delivery.settle(True)

    def _settled(self, queue: _Queue, stored: _Stored, requeue: bool | None) -> None:
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
