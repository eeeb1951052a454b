"""One client connection's side of the RabbitMQ broker: its channel, consumers, temporary
queues and bindings (:class:`RabbitSession`), and the deliveries it hands out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiormq
from aio_pika.abc import (
    AbstractChannel,
)
from aiormq.abc import DeliveredMessage

from iapflow.contracts.broker import (
    BrokerError,
    BrokerSession,
    BrokerUnavailable,
    Consumer,
    Delivery,
    LostCallback,
    NotFound,
)

if TYPE_CHECKING:
    from iapflow_rabbit.broker import RabbitBroker

log = logging.getLogger("iapflow.rabbit")


# The connection or channel is gone (as opposed to RabbitMQ refusing one operation).
CLOSED = (
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    ConnectionError,
    RuntimeError,
)


class RabbitDelivery(Delivery):
    """An aiormq message as a :class:`Delivery` (consumed without aio-pika's message wrapper,
    which cost a second task and a dozen checked attribute writes per message)."""

    def __init__(self, session: RabbitSession, queue: str, message: DeliveredMessage) -> None:
        properties = message.header.properties
        self.queue = queue
        self.body = message.body
        self.reply_to = properties.reply_to or ""
        self.correlation_id = properties.correlation_id or ""
        self.exchange = session.broker.client_name(message.exchange or "")
        self.routing_key = message.routing_key or ""
        if not self.exchange:  # the default exchange routes by queue name
            self.routing_key = session.broker.client_name(self.routing_key)
        self.consumer_tag = message.consumer_tag or ""
        self.headers = dict(properties.headers or {})
        self.redelivered = bool(message.redelivered)
        self._message = message
        self._session = session

    def _settle_on(self) -> aiormq.abc.AbstractChannel:
        # Once the session started closing its channel, settle nothing more on it (aiormq would
        # still send the frame until RabbitMQ's close-ok): closing the channel puts the
        # unacknowledged messages back anyway.
        if self._session.closed:
            raise BrokerError("cannot settle: the connection's broker session is closed")
        return self._message.channel

    # Straight on aiormq's channel, without waiting for the socket to drain: an ack gets no
    # answer from RabbitMQ anyway, and waiting cost the delivery two more loop iterations.

    async def ack(self) -> None:
        try:
            await self._settle_on().basic_ack(self._message.delivery_tag or 0, wait=False)
        except CLOSED as exc:
            raise BrokerError(f"cannot acknowledge: the channel closed ({exc!r})") from exc

    async def nack(self, requeue: bool = True) -> None:
        try:
            await self._settle_on().basic_nack(
                self._message.delivery_tag or 0, requeue=requeue, wait=False
            )
        except CLOSED as exc:
            raise BrokerError(f"cannot requeue: the channel closed ({exc!r})") from exc


@dataclass
class Binding:
    queue: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


class RabbitSession(BrokerSession):
    """One client connection: a channel with its consumers, and what it declared."""

    def __init__(self, broker: RabbitBroker, lost: LostCallback, prefetch: int) -> None:
        self.broker = broker
        self.lost = lost
        self.prefetch = prefetch
        self.channel: AbstractChannel | None = None
        self.queues: dict[str, bool] = {}
        """Declared queue name -> temporary?"""
        self.exchanges: dict[str, str] = {}
        self.bindings: list[Binding] = []
        self.consumers: dict[str, tuple[Consumer, str]] = {}
        """Queue name -> (consumer, consumer tag on this session's channel)."""
        self.closed = False

    async def open(self) -> None:
        """Open the session's channel (again, after a reconnect)."""
        connection = self.broker.connection()
        self.channel = await connection.channel(publisher_confirms=False)
        await self.channel.set_qos(prefetch_count=self.prefetch)

    def _channel(self) -> AbstractChannel:
        if self.closed:
            raise BrokerError("the connection's broker session is closed")
        if self.channel is None or self.channel.is_closed:
            raise BrokerUnavailable("RabbitMQ connection lost; reconnecting")
        return self.channel

    async def declare_queue(self, name: str, *, temporary: bool) -> None:
        self._channel()
        await self.broker.declare_queue(name, temporary)
        if temporary or name not in self.queues:
            self.queues[name] = temporary

    async def _start_consumer(self, name: str, consumer: Consumer) -> str:
        channel = await self._channel().get_underlay_channel()

        async def on_message(message: DeliveredMessage) -> None:
            await consumer(RabbitDelivery(self, name, message))

        ok = await channel.basic_consume(self.broker.name(name), on_message, no_ack=False)
        tag = ok.consumer_tag or ""
        self.consumers[name] = (consumer, tag)
        return tag

    async def _cancel_consumer(self, tag: str) -> None:
        if self.channel is None or self.channel.is_closed:
            return
        with contextlib.suppress(*CLOSED):
            channel = await self.channel.get_underlay_channel()
            await channel.basic_cancel(tag)

    async def consume(self, queue: str, consumer: Consumer) -> str:
        self._channel()
        old = self.consumers.pop(queue, None)
        if old is not None:
            await self._cancel_consumer(old[1])
        try:
            return await self._start_consumer(queue, consumer)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            await self.open()
            raise NotFound(f"queue {queue!r} does not exist") from exc

    async def cancel(self, queue: str) -> bool:
        entry = self.consumers.pop(queue, None)
        if entry is not None:
            await self._cancel_consumer(entry[1])
        if self.queues.get(queue):
            del self.queues[queue]
            self.bindings = [b for b in self.bindings if b.queue != queue]
            await self.broker.delete_queue(queue)
        return entry is not None

    async def declare_exchange(self, name: str, kind: str) -> None:
        self._channel()
        await self.broker.declare_exchange(name, kind)
        self.exchanges[name] = kind

    async def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self._channel()
        binding = Binding(queue, exchange, routing_key, dict(arguments or {}))
        await self.broker.bind(binding)
        if binding not in self.bindings:
            self.bindings.append(binding)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.broker.sessions.discard(self)
        channel, self.channel = self.channel, None
        self.consumers.clear()
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CLOSED, aiormq.exceptions.AMQPError):
                await channel.close()
        for name, temporary in list(self.queues.items()):
            if temporary:
                with contextlib.suppress(BrokerError):
                    await self.broker.delete_queue(name)
        self.queues.clear()

    async def restore(self) -> None:
        """After a reconnect: a new channel, then every queue, exchange, binding, consumer."""
        if self.closed:
            return
        await self.open()
        for name, temporary in list(self.queues.items()):
            try:
                await self.broker.declare_queue(name, temporary)
            except BrokerError as exc:
                log.warning("queue %s could not be restored: %s", name, exc)
                await self._lose("queue", name)
        for name, kind in list(self.exchanges.items()):
            try:
                await self.broker.declare_exchange(name, kind)
            except BrokerError as exc:
                log.warning("exchange %s could not be restored: %s", name, exc)
                del self.exchanges[name]
                await self.lost("exchange", name)
        for binding in list(self.bindings):
            try:
                await self.broker.bind(binding)
            except BrokerError as exc:
                log.warning("binding of %s could not be restored: %s", binding.queue, exc)
                await self._lose("queue", binding.queue)
        for name, (consumer, _tag) in list(self.consumers.items()):
            try:
                await self._start_consumer(name, consumer)
            except (BrokerError, aiormq.exceptions.AMQPError, *CLOSED) as exc:
                log.warning("consumer of %s could not be restored: %r", name, exc)
                self.consumers.pop(name, None)
                await self._lose("queue", name)
                if self.channel is None or self.channel.is_closed:
                    await self.open()

    async def _lose(self, kind: str, name: str) -> None:
        self.queues.pop(name, None)
        self.consumers.pop(name, None)
        self.bindings = [b for b in self.bindings if b.queue != name]
        await self.lost(kind, name)
