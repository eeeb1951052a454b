"""The queue service: OpenFlow's queue model on top of a :class:`~iapflow.contracts.broker.Broker`.

It decides who may consume and who may send (see ``docs/queues.md``), claims queue and exchange
names in the ``mq`` collection, keeps one broker session per client connection, and delivers
messages to clients as ``queuemessage`` pushes that are acknowledged only once the client
replied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iapflow import jsonutil, wellknown
from iapflow.builtin.queues.config import QueuesConfig
from iapflow.contracts.broker import (
    BrokerError,
    BrokerSession,
    BrokerUnavailable,
    Conflict,
    Delivery,
    NotFound,
    OutgoingMessage,
)
from iapflow.errors import AccessDenied, ApiError
from iapflow.ids import name_id
from iapflow.secure.acl import INVOKE, READ, UPDATE, has_right
from iapflow.secure.principal import Principal

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.session import Session

log = logging.getLogger("iapflow.queues")

MQ = "mq"
RESERVED = frozenset({"openflow", "openflow-dlx", "iapflow-dlx", "openflow_logs"})
MAX_NAME = 200
# What every broker takes in a name (AMQP clients refuse other characters), lower-cased.
_NAME_OK = re.compile(r"^[a-z0-9\-_.:@#,/+ ]+$")
NAME_CHARACTERS = "letters, digits, spaces and - _ . : @ # , / +"
MAX_SHORT_TEXT = 255
"""Bytes of a correlation id or routing key (an AMQP short string)."""
MAX_HEADERS_BYTES = 16 * 1024
MAX_HEADERS = 64
# Headers a broker reads as routing (RabbitMQ's sender-selected distribution): a client's would
# deliver a copy past the send check, so they are refused.
ROUTING_HEADERS = frozenset({"cc", "bcc"})
_ROOT = Principal(id=wellknown.ROOT, name="root", username="root")


def queue_name(value: Any, what: str = "queuename") -> str:
    """A queue or exchange name from a request: a string, lower-cased, not reserved, of at
    most :data:`MAX_NAME` of the characters every broker takes."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(f"{what} must be a string")
    name = value.strip().lower()
    if not name:
        return ""
    if len(name) > MAX_NAME or not _NAME_OK.match(name):
        raise ApiError(
            f"{what} must be at most {MAX_NAME} characters: {NAME_CHARACTERS} (got {value[:60]!r})"
        )
    if name in RESERVED or name.startswith("amq."):
        raise AccessDenied(f"{what} {name!r} is reserved for the server")
    return name


def short_text(value: Any, what: str) -> str:
    """A correlation id or routing key: a string of at most 255 bytes, without control
    characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(f"{what} must be a string")
    if len(value.encode("utf-8")) > MAX_SHORT_TEXT or any(ord(c) < 32 for c in value):
        raise ApiError(f"{what} must be at most {MAX_SHORT_TEXT} bytes, without control characters")
    return value


def message_headers(value: Any) -> dict[str, Any]:
    """A message's ``headers``: an object of at most :data:`MAX_HEADERS` entries and
    :data:`MAX_HEADERS_BYTES` as JSON, without routing headers (``CC``, ``BCC``)."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ApiError("headers must be an object")
    routing = sorted(k for k in value if isinstance(k, str) and k.lower() in ROUTING_HEADERS)
    if routing:
        raise AccessDenied(
            f"headers {', '.join(routing)} are not allowed: they would route a copy of the "
            "message around the send check; send to each queue instead"
        )
    if len(value) > MAX_HEADERS:
        raise ApiError(f"headers may have at most {MAX_HEADERS} entries")
    for key in value:
        short_text(key, "a header name")
    try:
        size = len(jsonutil.dumps(value).encode("utf-8"))
    except (TypeError, ValueError):
        raise ApiError("headers must hold JSON values") from None
    if size > MAX_HEADERS_BYTES:
        raise ApiError(f"headers are {size} bytes as JSON; at most {MAX_HEADERS_BYTES} are allowed")
    return value


def temporary_name(clientagent: str) -> str:
    """``<agent>.<random>``: the name of a connection's temporary queue or exchange."""
    agent = re.sub(r"[^a-z0-9_-]", "", clientagent.lower())[:40] or "client"
    return f"{agent}.{secrets.token_hex(8)}"


@contextlib.contextmanager
def broker_errors() -> Iterator[None]:
    """Turn broker failures into clear command errors."""
    try:
        yield
    except BrokerUnavailable as exc:
        raise ApiError(f"message broker unavailable, try again: {exc}") from exc
    except (NotFound, Conflict) as exc:
        raise ApiError(str(exc)) from exc
    except BrokerError as exc:
        raise ApiError(f"message broker refused: {exc}") from exc


@dataclass
class _Target:
    """What a queue or exchange name refers to."""

    kind: str
    """``principal`` (a user or role inbox), ``queue``/``exchange`` (claimed in ``mq``) or
    ``none`` (unclaimed)."""
    doc: dict[str, Any] | None = None


class ClientQueues:
    """One connection's queues: its broker session and what it consumes."""

    def __init__(self, service: QueueService, session: Session, broker: BrokerSession) -> None:
        self.service = service
        self.session = session
        self.broker = broker
        self.consuming: dict[str, bool] = {}
        """Queue name -> temporary?"""
        self.exchanges: set[str] = set()

    async def add_queue(self, name: str, temporary: bool) -> None:
        """Declare ``name`` and (re)start this connection's consumer of it."""
        with broker_errors():
            await self.broker.declare_queue(name, temporary=temporary)
            await self.broker.consume(name, self.deliver)
        self.consuming[name] = temporary

    async def cancel(self, name: str) -> bool:
        """Stop consuming ``name``; a temporary queue is deleted."""
        with broker_errors():
            found = await self.broker.cancel(name)
        self.consuming.pop(name, None)
        return found

    async def deliver(self, delivery: Delivery) -> None:
        """Push one message to the client; ack on its reply, requeue on an ``error`` reply."""
        try:
            data: Any = json.loads(delivery.body)
        except ValueError:
            data = delivery.body.decode("utf-8", "replace")
        payload = {
            "queuename": delivery.queue,
            "data": data,
            "replyto": delivery.reply_to,
            "correlationId": delivery.correlation_id,
            "consumerTag": delivery.consumer_tag,
            "routingkey": delivery.routing_key,
            "exchangename": delivery.exchange,
        }
        try:
            command, _reply = await self.session.push_and_wait("queuemessage", payload)
        except ConnectionError:
            with contextlib.suppress(BrokerError):
                await delivery.nack(requeue=True)
            return
        try:
            if command == "error":
                await asyncio.sleep(self.service.config.requeue_delay_seconds)
                await delivery.nack(requeue=True)
            else:
                await delivery.ack()
        except BrokerError as exc:
            log.info("could not settle a delivery from %s: %s", delivery.queue, exc)

    async def lost(self, kind: str, name: str) -> None:
        """The broker could not restore ``name`` after an outage: tell the client."""
        if kind == "exchange":
            self.exchanges.discard(name)
            await self.session.push("exchangeclosed", {"exchangename": name})
        else:
            self.consuming.pop(name, None)
            await self.session.push("queueclosed", {"queuename": name})

    async def close(self) -> None:
        """Release everything (consumers, temporary queues, unacked deliveries)."""
        with contextlib.suppress(BrokerError):
            await self.broker.close()


class QueueService:
    """Queue rights, name claims and per-connection broker sessions for one platform."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.broker = platform.broker
        self.config = platform.config.section(QueuesConfig)
        self._clients: dict[str, ClientQueues] = {}
        self._opening: dict[str, asyncio.Future[ClientQueues]] = {}
        self._claim_lock = asyncio.Lock()
        self._lookups: dict[tuple[str, str], tuple[float, _Target]] = {}

    # -- connections ----------------------------------------------------------------------------

    async def client(self, session: Session) -> ClientQueues:
        """The connection's queues, opening its broker session on first use."""
        found = self._clients.get(session.id)
        if found is not None:
            return found
        pending = self._opening.get(session.id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ClientQueues] = asyncio.get_running_loop().create_future()
        self._opening[session.id] = future
        try:
            holder: list[ClientQueues] = []

            async def lost(kind: str, name: str) -> None:
                if holder:
                    await holder[0].lost(kind, name)

            with broker_errors():
                broker_session = await self.broker.open_session(lost, self.config.prefetch)
            client = ClientQueues(self, session, broker_session)
            holder.append(client)
            if session.id not in self.platform.sessions:
                await client.close()
                raise ApiError("connection closed")
            self._clients[session.id] = client
            future.set_result(client)
            return client
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            self._opening.pop(session.id, None)

    async def session_closed(self, session: Session) -> None:
        """Drop the connection's consumers and temporary queues."""
        client = self._clients.pop(session.id, None)
        if client is not None:
            await client.close()

    # -- names and rights -----------------------------------------------------------------------

    def forget(self, collection: str) -> None:
        """A ``users`` or ``mq`` document changed: drop the cached name lookups."""
        if collection in ("users", MQ):
            self._lookups.clear()

    async def _lookup(self, kind: str, name: str) -> _Target:
        """What ``name`` refers to (``kind`` is ``queue`` or ``exchange``), cached briefly."""
        key = (kind, name)
        now = time.monotonic()
        cached = self._lookups.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        data = self.platform.data
        target = _Target("none")
        if kind == "queue":
            user = await data.get(_ROOT, "users", name)
            if user is not None:
                target = _Target("principal", user)
        if target.kind == "none":
            docs = await data.query(_ROOT, MQ, {"name": name, "_type": kind}, top=1)
            if docs:
                target = _Target(kind, docs[0])
        if self.config.lookup_cache_seconds > 0:
            if len(self._lookups) > 10000:
                self._lookups.clear()
            self._lookups[key] = (now + self.config.lookup_cache_seconds, target)
        return target

    def _needed(self, consume: bool) -> int:
        if consume:
            return UPDATE if self.config.consumer_needs_update else READ
        return INVOKE if self.config.sender_needs_invoke else READ

    def _check(self, principal: Principal, target: _Target, name: str, consume: bool) -> None:
        assert target.doc is not None
        rights = self._needed(consume)
        if has_right(principal, target.doc, rights):
            return
        what = {"principal": "the inbox of", "queue": "queue", "exchange": "exchange"}[target.kind]
        holder = "user or role" if target.kind == "principal" else f"mq {target.kind}"
        shown = target.doc.get("name") or name
        right = {READ: "read", UPDATE: "update", INVOKE: "invoke"}[rights]
        verb = "consume from" if consume else "send to"
        raise AccessDenied(
            f"access denied: you may not {verb} {what} {shown!r} "
            f"(that needs the {right} right on its {holder} document)"
        )

    async def check_consume(self, principal: Principal, name: str) -> None:
        """May ``principal`` consume queue ``name``? Claims an unclaimed name for it."""
        if name in principal.ids:
            return
        target = await self._lookup("queue", name)
        if target.kind != "none":
            self._check(principal, target, name, consume=True)
            return
        await self._claim(principal, "queue", name)

    async def check_exchange(self, principal: Principal, name: str) -> None:
        """May ``principal`` register exchange ``name``? Claims an unclaimed name for it."""
        target = await self._lookup("exchange", name)
        if target.kind != "none":
            self._check(principal, target, name, consume=True)
            return
        await self._claim(principal, "exchange", name)

    async def check_send(self, principal: Principal, name: str, kind: str = "queue") -> None:
        """May ``principal`` send to queue (or exchange) ``name``? Unclaimed names are open."""
        if kind == "queue" and name in principal.ids:
            return
        target = await self._lookup(kind, name)
        if target.kind != "none":
            self._check(principal, target, name, consume=False)

    async def _claim(self, principal: Principal, kind: str, name: str) -> None:
        async with self._claim_lock:
            self._lookups.pop((kind, name), None)
            target = await self._lookup(kind, name)
            if target.kind != "none":
                self._check(principal, target, name, consume=True)
                return
            with broker_errors():
                if kind == "queue":
                    exists = await self.broker.queue_exists(name)
                else:
                    exists = await self.broker.exchange_exists(name)
            if exists:
                raise AccessDenied(
                    f"access denied: {kind} {name!r} is in use by another connection "
                    f"(a temporary {kind}) and cannot be claimed"
                )
            # The _id is the claim: when another server claims the same name between our
            # lookup and this insert, the store refuses the second insert (duplicate key) and
            # the name is checked against the winner's document like any claimed name.
            claim = {"_id": name_id(kind, name), "_type": kind, "name": name}
            try:
                await self.platform.data.insert_one(principal, MQ, claim, rules=False)
            except ApiError:
                self._lookups.pop((kind, name), None)
                target = await self._lookup(kind, name)
                if target.kind == "none":
                    raise
                self._check(principal, target, name, consume=True)
            self._lookups.pop((kind, name), None)

    # -- sending --------------------------------------------------------------------------------

    async def send(
        self,
        principal: Principal,
        *,
        queue: str,
        exchange: str,
        routing_key: str,
        payload: Any,
        reply_to: str,
        correlation_id: str,
        expiration_ms: int,
        headers: Mapping[str, Any],
    ) -> bool:
        """Check the right to send and publish; False when no queue took the message."""
        if exchange:
            await self.check_send(principal, exchange, "exchange")
        else:
            await self.check_send(principal, queue)
        message = OutgoingMessage(
            body=jsonutil.dumps(payload).encode(),
            reply_to=reply_to,
            correlation_id=correlation_id,
            expiration_ms=expiration_ms,
            headers=headers,
        )
        with broker_errors():
            return await self.broker.publish(
                message, queue=queue, exchange=exchange, routing_key=routing_key
            )
