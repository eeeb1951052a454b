"""What the in-process broker holds: queues with their waiting messages and consumers,
exchanges with their bindings, and the append-only log that keeps named queues' messages
across restarts."""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from iapflow.contracts.broker import (
    Consumer,
    headers_match,
    topic_matches,
)

if TYPE_CHECKING:
    from iapflow.builtin.memory.broker import MemorySession

log = logging.getLogger("iapflow.memory")

LOG_NAME = "queues.jsonl"


@dataclass
class Stored:
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
    def from_json(cls, message_id: int, data: Mapping[str, Any]) -> Stored:
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


class ConsumerSlot:
    def __init__(self, tag: str, queue: MemoryQueue, callback: Consumer, session: MemorySession):
        self.tag = tag
        self.queue = queue
        self.callback = callback
        self.session = session
        self.inflight = 0


class MemoryQueue:
    def __init__(self, name: str, owner: MemorySession | None) -> None:
        self.name = name
        self.owner = owner
        self.ready: deque[Stored] = deque()
        self.consumers: list[ConsumerSlot] = []
        self.next_consumer = 0

    @property
    def durable(self) -> bool:
        return self.owner is None


@dataclass
class Binding:
    queue: str
    routing_key: str
    arguments: dict[str, Any]


@dataclass
class MemoryExchange:
    name: str
    kind: str
    bindings: list[Binding] = field(default_factory=list)

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


class QueueLog:
    """Append-only record of named queues and the messages waiting in them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def load(self) -> tuple[dict[str, list[Stored]], int]:
        queues: dict[str, dict[int, Stored]] = {}
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
                        queues.setdefault(record["q"], {})[message_id] = Stored.from_json(
                            message_id, record["m"]
                        )
                        where[message_id] = record["q"]
                    elif "a" in record:
                        name = where.pop(int(record["a"]), None)
                        if name is not None:
                            queues.get(name, {}).pop(int(record["a"]), None)
        return {name: list(messages.values()) for name, messages in queues.items()}, last_id

    def open(self, queues: Mapping[str, MemoryQueue], unacked: list[tuple[str, Stored]]) -> None:
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
    def _put(queue: str, stored: Stored) -> str:
        return json.dumps({"p": stored.id, "q": queue, "m": stored.to_json()}) + "\n"

    def _write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line)
            self._file.flush()

    def declared(self, queue: str) -> None:
        self._write(json.dumps({"q": queue}) + "\n")

    def deleted(self, queue: str) -> None:
        self._write(json.dumps({"d": queue}) + "\n")

    def put(self, queue: str, stored: Stored) -> None:
        self._write(self._put(queue, stored))

    def removed(self, stored: Stored) -> None:
        self._write(json.dumps({"a": stored.id}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
