"""The broker contract: what a messaging plugin implements.

Only the queue service (:mod:`iapflow.builtin.queues.service`) calls a broker. Bodies are bytes (the
service sends JSON). A broker provides:

- queues: *named* queues are durable and shared by competing consumers; *temporary* queues
  belong to one :class:`BrokerSession` and disappear when it closes;
- exchanges of the four AMQP types (``fanout``, ``direct``, ``topic``, ``headers``) and bindings
  of queues to them;
- publishing with ``reply_to``, ``correlation_id``, ``expiration`` and headers; a publish returns
  whether any queue took the message;
- consuming with explicit :meth:`Delivery.ack` / :meth:`Delivery.nack` (``requeue``);
- dead-lettering: a message with a ``reply_to`` that expires in a queue, or that no queue takes,
  produces a ``timeout`` reply (see :func:`timeout_body`) to its ``reply_to`` queue with the same
  correlation id;
- one :class:`BrokerSession` per client connection holding its consumers, temporary queues and
  bindings, released together by :meth:`BrokerSession.close` (unacknowledged deliveries go back
  to their queues).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iapflow.errors import IapflowError

EXCHANGE_TYPES = ("fanout", "direct", "topic", "headers")


class BrokerError(IapflowError):
    """The broker refused or failed an operation; the message says why."""


class BrokerUnavailable(BrokerError):
    """The broker is not reachable right now (for example while RabbitMQ restarts)."""


class NotFound(BrokerError):
    """A named exchange or queue does not exist."""


class Conflict(BrokerError):
    """An exchange or queue exists with other properties (another exchange type)."""


@dataclass(frozen=True)
class BrokerContext:
    """What the core tells a broker factory besides the backend's own options."""

    data_dir: Path
    """The server's data directory; an embedded broker keeps its files below it."""


BrokerFactory = Callable[[Mapping[str, Any], BrokerContext], "Broker"]
"""What ``register_brokers`` registers: ``factory(options, context)`` returns an unstarted
broker; ``options`` are the ``[messaging]`` keys besides ``backend``."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish."""

    body: bytes
    reply_to: str = ""
    correlation_id: str = ""
    expiration_ms: int | None = None
    """Milliseconds the message may wait in a queue; ``None`` waits forever."""
    headers: Mapping[str, Any] = field(default_factory=dict)


class Delivery(ABC):
    """A message handed to a consumer; the consumer must :meth:`ack` or :meth:`nack` it."""

    queue: str
    body: bytes
    reply_to: str
    correlation_id: str
    routing_key: str
    exchange: str
    consumer_tag: str
    headers: Mapping[str, Any]
    redelivered: bool

    @abstractmethod
    async def ack(self) -> None:
        """The consumer is done: remove the message from its queue."""

    @abstractmethod
    async def nack(self, requeue: bool = True) -> None:
        """The consumer failed: put the message back (``requeue``) or drop it."""


Consumer = Callable[[Delivery], Awaitable[None]]
"""Called once per delivery, each in its own task; it acknowledges the delivery itself."""

LostCallback = Callable[[str, str], Awaitable[None]]
"""``lost(kind, name)``: a queue (``kind="queue"``) or exchange of the session could not be
restored after a broker outage; the service tells the client (``queueclosed``)."""


class BrokerSession(ABC):
    """One client connection's consumers, temporary queues and bindings."""

    @abstractmethod
    async def declare_queue(self, name: str, *, temporary: bool) -> None:
        """Make sure queue ``name`` exists. A temporary queue belongs to this session."""

    @abstractmethod
    async def consume(self, queue: str, consumer: Consumer) -> str:
        """Start consuming ``queue`` (replacing this session's consumer of it); return the tag."""

    @abstractmethod
    async def cancel(self, queue: str) -> bool:
        """Stop this session's consumer of ``queue``; delete the queue if it is this session's
        temporary queue. Return False when the session had no consumer there."""

    @abstractmethod
    async def declare_exchange(self, name: str, kind: str) -> None:
        """Make sure exchange ``name`` of type ``kind`` (:data:`EXCHANGE_TYPES`) exists; raise
        :class:`Conflict` if it exists with another type."""

    @abstractmethod
    async def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind ``queue`` to ``exchange``; ``arguments`` are the headers to match for a headers
        exchange (``x-match``: ``all`` (default) or ``any``)."""

    @abstractmethod
    async def close(self) -> None:
        """Cancel every consumer, delete temporary queues and their bindings, put
        unacknowledged deliveries back (idempotent)."""


class Broker(ABC):
    """A message broker shared by every connection of one server process."""

    @abstractmethod
    async def start(self) -> None:
        """Connect (or load persisted queues); raise BrokerError when it cannot."""

    @abstractmethod
    async def stop(self) -> None:
        """Close every session and disconnect."""

    @abstractmethod
    async def open_session(self, lost: LostCallback, prefetch: int = 25) -> BrokerSession:
        """A session for one client connection; at most ``prefetch`` unacknowledged
        deliveries per consumer."""

    @abstractmethod
    async def publish(
        self,
        message: OutgoingMessage,
        *,
        queue: str = "",
        exchange: str = "",
        routing_key: str = "",
    ) -> bool:
        """Publish to ``queue`` (through the default exchange) or to ``exchange`` with
        ``routing_key``. Return False when no queue took the message (a ``timeout`` then went to
        its ``reply_to``); raise :class:`NotFound` for a missing exchange."""

    @abstractmethod
    async def queue_exists(self, name: str) -> bool:
        """True when queue ``name`` exists."""

    @abstractmethod
    async def exchange_exists(self, name: str) -> bool:
        """True when exchange ``name`` exists (declared by any connection)."""

    @abstractmethod
    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages (no error when it does not exist)."""


def timeout_body(body: bytes) -> bytes:
    """The body of the ``timeout`` reply to a request that expired or could not be routed: the
    request's JSON object with ``command: "timeout"`` and without the sender's ``__jwt``."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {"data": data}
    data.pop("__jwt", None)
    data["command"] = "timeout"
    return json.dumps(data, separators=(",", ":")).encode()


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split by ``.``; ``*`` is one word, ``#`` zero or more."""
    return _match(pattern.split("."), key.split(".") if key else [])


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """AMQP headers-exchange matching: ``x-match`` ``all`` (default) or ``any`` of the other
    binding arguments equal to the message's headers."""
    wanted = {k: v for k, v in arguments.items() if not k.startswith("x-")}
    mode = str(arguments.get("x-match", "all"))
    hits = [k in headers and headers[k] == v for k, v in wanted.items()]
    if mode.startswith("any"):
        return any(hits)
    return all(hits)
