"""The iapflow broker contract on RabbitMQ, through aio-pika.

- One AMQP connection per server process, TCP_NODELAY set on its socket (so request/reply is
  not held back by Nagle's algorithm), and one channel per client connection holding that
  client's consumers, closed when the client goes.
- Declarations run on a separate channel under a lock, so a refused declaration (which closes
  its channel) never takes a client's consumers down with it. Publishes run on a channel with
  publisher confirms and ``mandatory``: a message no queue takes comes back and its
  ``reply_to`` gets a ``timeout``.
- Every queue dead-letters to the fanout exchange ``dlx`` (default ``iapflow-dlx``); every
  server consumes the shared queue of the same name and turns each dead-lettered request into a
  ``timeout`` to its ``reply_to``.
- When the connection drops (RabbitMQ restarts), the broker reconnects every
  ``reconnect_delay_seconds`` and re-declares each live session's queues, exchanges, bindings
  and consumers; what cannot be restored is reported through the session's ``lost`` callback.
- Every queue and exchange iapflow declares, publishes to or binds is named ``prefix`` (default
  ``iapflow.``) plus the name clients use, so that on a RabbitMQ shared with other programs
  iapflow never touches (nor lets its clients consume from) what it did not create. Clients
  never see the prefix.
- A publish to an exchange is checked against the exchange's existence first (a refused publish
  closes the channel every session publishes on, failing other users' sends in flight); one
  message's size limits are checked by the queue service before it gets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
)
from aiormq.connection import TCPTransportFactory, TLSTransportFactory
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from iapflow.contracts.broker import (
    EXCHANGE_TYPES,
    Broker,
    BrokerContext,
    BrokerError,
    BrokerSession,
    BrokerUnavailable,
    Conflict,
    LostCallback,
    NotFound,
    OutgoingMessage,
    timeout_body,
)
from iapflow.errors import ConfigError
from iapflow_rabbit.session import CLOSED, Binding, RabbitSession

log = logging.getLogger("iapflow.rabbit")

T = TypeVar("T")
_DECLARE_FIRST_CHANNEL = 60000
_DECLARE_CHANNELS = 2000


class RabbitOptions(BaseModel):
    """``[messaging]`` keys of the ``rabbit`` backend."""

    model_config = ConfigDict(extra="forbid")
    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    dlx: str = "iapflow-dlx"
    prefix: str = Field("iapflow.", max_length=50)
    reconnect_delay_seconds: float = Field(1.0, gt=0)
    heartbeat_seconds: int = Field(60, ge=0)


def build_broker(options: Mapping[str, Any], context: BrokerContext) -> RabbitBroker:
    """The ``rabbit`` backend factory; a bad option fails with its key and the reason."""
    try:
        parsed = RabbitOptions.model_validate(dict(options))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        reason = (
            "unknown key for the rabbit backend"
            if error["type"] == "extra_forbidden"
            else (f"{error['msg']} (got {error.get('input')!r})")
        )
        raise ConfigError(f"messaging.{key}", reason) from None
    if not parsed.amqp_url.startswith(("amqp://", "amqps://")):
        raise ConfigError("messaging.amqp_url", "must start with amqp:// or amqps://")
    return RabbitBroker(parsed)


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoDelayTCP(TCPTransportFactory):
    """aiormq's TCP transport with Nagle's algorithm switched off (explicitly)."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await super().create(url, **kwargs)
        _no_delay(writer)
        self.broker.socket = writer.get_extra_info("socket")
        return reader, writer


class _NoDelayTLS(TLSTransportFactory):
    """aiormq's TLS transport with Nagle's algorithm switched off."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await super().create(url, **kwargs)
        _no_delay(writer)
        self.broker.socket = writer.get_extra_info("socket")
        return reader, writer


class RabbitBroker(Broker):
    """The broker contract on one RabbitMQ connection per server process."""

    def __init__(self, options: RabbitOptions) -> None:
        self.options = options
        self.sessions: set[RabbitSession] = set()
        self._connection: AbstractConnection | None = None
        self._publish: AbstractChannel | None = None
        self._declare: AbstractChannel | None = None
        self._declare_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._dead_letters: AbstractChannel | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopping = False
        self.reconnects = 0
        """How many times the broker reconnected after losing RabbitMQ (tests read it)."""
        self.socket: Any = None
        """The AMQP connection's socket (TCP_NODELAY set)."""
        self.before_restore: Callable[[], Awaitable[None]] | None = None
        """Test hook: awaited after a reconnect, before the sessions are re-registered (a test
        uses it to take a queue's name first, so that its restore fails deterministically)."""
        self._known_exchanges: dict[str, float] = {}
        """Exchange names seen to exist, and when (checked again after a few seconds)."""
        self._missing_exchanges: dict[str, float] = {}
        """Exchange names seen not to exist, and when (not asked again for a second)."""
        self._declare_numbers = itertools.cycle(
            range(_DECLARE_FIRST_CHANNEL, _DECLARE_FIRST_CHANNEL + _DECLARE_CHANNELS)
        )

    # -- names ----------------------------------------------------------------------------------

    def name(self, client_name: str) -> str:
        """The RabbitMQ name of a queue or exchange clients know as ``client_name`` (the
        default exchange, ``""``, stays itself)."""
        return f"{self.options.prefix}{client_name}" if client_name else ""

    def client_name(self, rabbit_name: str) -> str:
        """The name clients know for a RabbitMQ queue or exchange of iapflow's."""
        return rabbit_name.removeprefix(self.options.prefix)

    # -- connection -----------------------------------------------------------------------------

    def connection(self) -> AbstractConnection:
        """The live AMQP connection, or BrokerUnavailable."""
        if self._connection is None or self._connection.is_closed:
            raise BrokerUnavailable("RabbitMQ connection lost; reconnecting")
        return self._connection

    async def start(self) -> None:
        self._stopping = False
        try:
            await self._connect()
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerError(f"cannot connect to {self._shown_url()}: {exc!r}") from exc

    def _shown_url(self) -> str:
        url = URL(self.options.amqp_url)
        return str(url.with_password("***")) if url.password else str(url)

    async def _connect(self) -> None:
        url = URL(self.options.amqp_url).update_query(heartbeat=self.options.heartbeat_seconds)
        factory = _NoDelayTLS(self) if url.scheme == "amqps" else _NoDelayTCP(self)
        connection = aio_pika.Connection(url)
        # aiormq takes a transport factory; aio_pika.connect() would turn it into a URL query.
        connection.kwargs["transport_factory"] = factory
        try:
            # Closed on failure too: an unclosed aio_pika Connection schedules its own close
            # from __del__, which outside a running loop is a coroutine never awaited.
            await connection.connect(timeout=10)
            self._publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._declare = await connection.channel(publisher_confirms=False)
            self._dead_letters = await connection.channel(publisher_confirms=False)
            await self._dead_letters.set_qos(prefetch_count=50)
            dlx = await self._dead_letters.declare_exchange(
                self.options.dlx, aio_pika.ExchangeType.FANOUT, durable=True
            )
            queue = await self._dead_letters.declare_queue(self.options.dlx, durable=True)
            await queue.bind(dlx)
            await queue.consume(self._on_dead_letter, no_ack=False)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        connection.close_callbacks.add(self._on_connection_closed)

    def _on_connection_closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        if self._stopping or self._reconnecting is not None:
            return
        log.warning("RabbitMQ connection lost (%r); reconnecting", exc)
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while not self._stopping:
                await asyncio.sleep(self.options.reconnect_delay_seconds)
                try:
                    await self._connect()
                except Exception as exc:
                    log.info("RabbitMQ not back yet: %r", exc)
                    continue
                self.reconnects += 1
                if self.before_restore is not None:
                    try:
                        await self.before_restore()
                    except Exception:
                        log.exception("the before_restore hook failed")
                log.warning(
                    "RabbitMQ connection restored; re-registering %d sessions", len(self.sessions)
                )
                for session in list(self.sessions):
                    try:
                        await session.restore()
                    except Exception:
                        log.exception("could not restore a session; closing its queues")
                        for name in list(session.queues):
                            await session._lose("queue", name)
                return
        finally:
            self._reconnecting = None

    async def stop(self) -> None:
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnecting
        for session in list(self.sessions):
            await session.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def open_session(self, lost: LostCallback, prefetch: int = 25) -> BrokerSession:
        session = RabbitSession(self, lost, prefetch)
        try:
            await session.open()
        except CLOSED as exc:
            raise BrokerUnavailable(f"RabbitMQ connection lost: {exc!r}") from exc
        self.sessions.add(session)
        return session

    # -- declarations (one channel, serialised: a refusal closes it) ----------------------------

    async def _declaring(self, work: Callable[[AbstractChannel], Awaitable[T]]) -> T:
        async with self._declare_lock:
            if self._declare is None or self._declare.is_closed:
                self._declare = await self._fresh_channel()
            try:
                return await work(self._declare)
            except CLOSED as exc:
                raise BrokerUnavailable(f"RabbitMQ connection lost: {exc!r}") from exc

    async def _fresh_channel(self) -> AbstractChannel:
        """A new channel for declarations. A refused declaration closes its channel, and aiormq
        frees the number as soon as RabbitMQ's close arrives, before its close-ok is sent: a
        channel opened at once could get the same number, which RabbitMQ answers by closing the
        whole connection ("second 'channel.open' seen"). So each new declaration channel takes
        the next number of a range of its own instead of the lowest free one."""
        connection = self.connection()
        for _ in range(_DECLARE_CHANNELS):
            number = next(self._declare_numbers)
            try:
                return await connection.channel(channel_number=number, publisher_confirms=False)
            except ValueError:
                continue  # still in use
        raise BrokerUnavailable("no free channel number for declarations")

    def _queue_arguments(self) -> dict[str, Any]:
        return {"x-dead-letter-exchange": self.options.dlx}

    async def declare_queue(self, name: str, temporary: bool) -> None:
        """Declare a named (durable) or temporary (auto-delete) queue with the DLX."""

        async def work(channel: AbstractChannel) -> None:
            await channel.declare_queue(
                self.name(name),
                durable=not temporary,
                auto_delete=temporary,
                arguments=self._queue_arguments(),
            )

        try:
            await self._declaring(work)
        except aiormq.exceptions.ChannelPreconditionFailed:
            # It exists with other arguments (declared by something else): use it as it is.
            async def passive(channel: AbstractChannel) -> None:
                await channel.declare_queue(self.name(name), passive=True)

            try:
                await self._declaring(passive)
            except aiormq.exceptions.AMQPError as exc:
                raise BrokerError(f"queue {name!r} cannot be declared: {exc}") from exc
        except aiormq.exceptions.ChannelLockedResource as exc:
            raise BrokerError(f"queue {name!r} is exclusive to another connection") from exc
        except aiormq.exceptions.AMQPError as exc:
            raise BrokerError(f"queue {name!r} cannot be declared: {exc}") from exc

    async def declare_exchange(self, name: str, kind: str) -> None:
        """Declare exchange ``name``; Conflict when it exists with another type."""
        if kind not in EXCHANGE_TYPES:
            raise BrokerError(f"unknown exchange type {kind!r}; use one of {EXCHANGE_TYPES}")

        async def work(channel: AbstractChannel) -> None:
            await channel.declare_exchange(
                self.name(name), aio_pika.ExchangeType(kind), durable=False, auto_delete=False
            )
            self._missing_exchanges.pop(name, None)
            self._known_exchanges[name] = time.monotonic()

        try:
            await self._declaring(work)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise Conflict(f"exchange {name!r} exists with another type than {kind!r}") from exc
        except aiormq.exceptions.AMQPError as exc:
            raise BrokerError(f"exchange {name!r} cannot be declared: {exc}") from exc

    async def bind(self, binding: Binding) -> None:
        """Bind a queue to an exchange."""

        async def work(channel: AbstractChannel) -> None:
            queue = await channel.get_queue(self.name(binding.queue), ensure=False)
            await queue.bind(
                self.name(binding.exchange),
                binding.routing_key,
                arguments=binding.arguments or None,
            )

        try:
            await self._declaring(work)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise NotFound(f"cannot bind: {exc}") from exc
        except aiormq.exceptions.AMQPError as exc:
            raise BrokerError(f"cannot bind {binding.queue!r}: {exc}") from exc

    async def queue_exists(self, name: str) -> bool:
        async def work(channel: AbstractChannel) -> bool:
            await channel.declare_queue(self.name(name), passive=True)
            return True

        try:
            return await self._declaring(work)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            return True

    async def exchange_exists(self, name: str) -> bool:
        now = time.monotonic()
        if now - self._missing_exchanges.get(name, -60.0) < 1.0:
            return False

        async def work(channel: AbstractChannel) -> bool:
            await channel.declare_exchange(self.name(name), passive=True)
            return True

        try:
            found = await self._declaring(work)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._known_exchanges.pop(name, None)
            if len(self._missing_exchanges) > 10000:
                self._missing_exchanges.clear()
            self._missing_exchanges[name] = now
            return False
        self._missing_exchanges.pop(name, None)
        self._known_exchanges[name] = now
        return found

    async def delete_queue(self, name: str) -> None:
        async def work(channel: AbstractChannel) -> None:
            await channel.queue_delete(self.name(name))

        with contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity):
            await self._declaring(work)

    # -- publishing -----------------------------------------------------------------------------

    async def _publish_channel(self) -> AbstractChannel:
        if self._publish is None or self._publish.is_closed:
            async with self._publish_lock:
                if self._publish is None or self._publish.is_closed:
                    self._publish = await self.connection().channel(
                        publisher_confirms=True, on_return_raises=True
                    )
        return self._publish

    async def publish(
        self,
        message: OutgoingMessage,
        *,
        queue: str = "",
        exchange: str = "",
        routing_key: str = "",
    ) -> bool:
        # An exchange that does not exist would close the publishing channel that every session
        # shares: check it first (remembered for a few seconds once seen).
        stale = time.monotonic() - self._known_exchanges.get(exchange, -60.0) > 5.0
        if exchange and stale and not await self.exchange_exists(exchange):
            raise NotFound(f"exchange {exchange!r} does not exist")
        # aiormq directly (aio-pika's Message and Exchange cost a third of a publish), and
        # without waiting for the socket to drain: the publisher confirm is what is awaited.
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,  # persistent
            reply_to=message.reply_to or None,
            correlation_id=message.correlation_id or None,
            expiration=str(message.expiration_ms) if message.expiration_ms is not None else None,
            headers=dict(message.headers) or None,
        )
        try:
            underlay = await (await self._publish_channel()).get_underlay_channel()
            # The concrete channel takes ``wait`` (its abstract base does not declare it).
            channel = cast(aiormq.Channel, underlay)
            await channel.basic_publish(
                message.body,
                exchange=self.name(exchange),
                routing_key=routing_key if exchange else self.name(queue or routing_key),
                properties=properties,
                mandatory=True,
                wait=False,
            )
            return True
        except aiormq.exceptions.DeliveryError:
            await self._timeout(message.body, message.reply_to, message.correlation_id)
            return False
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            self._known_exchanges.pop(exchange, None)
            raise NotFound(f"exchange {exchange!r} does not exist") from exc
        except CLOSED as exc:
            raise BrokerUnavailable(f"RabbitMQ connection lost: {exc!r}") from exc

    async def _timeout(self, body: bytes, reply_to: str, correlation_id: str) -> None:
        """Send the ``timeout`` reply for a request that expired or found no queue."""
        if not reply_to:
            return
        reply = aio_pika.Message(
            timeout_body(body),
            correlation_id=correlation_id or None,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
        )
        try:
            channel = await self._publish_channel()
            await channel.default_exchange.publish(reply, self.name(reply_to), mandatory=False)
        except (aiormq.exceptions.AMQPError, *CLOSED) as exc:
            log.info("timeout reply to %s not sent: %r", reply_to, exc)

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._timeout(message.body, message.reply_to or "", message.correlation_id or "")
        finally:
            with contextlib.suppress(*CLOSED):
                await message.ack()
