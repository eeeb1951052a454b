"""``registerqueue``, ``registerexchange``, ``queuemessage``, ``closequeue``.

The rules (who may consume, who may send, what is claimed) are in ``docs/queues.md``; the work
is done by :class:`iapflow.builtin.queues.service.QueueService`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iapflow import jsonutil
from iapflow.builtin.queues.config import QueuesConfig
from iapflow.builtin.queues.service import (
    ClientQueues,
    QueueService,
    broker_errors,
    message_headers,
    queue_name,
    short_text,
    temporary_name,
)
from iapflow.contracts.broker import EXCHANGE_TYPES
from iapflow.dispatch import Request
from iapflow.errors import ApiError
from iapflow.ids import new_id
from iapflow.stash import StashKey

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.session import Session

SERVICE = StashKey[QueueService]("queue service")
MAX_EXPIRATION_MS = 2**31 - 1
_ALGORITHMS = {**{t: t for t in EXCHANGE_TYPES}, "header": "headers"}


def service(platform: Platform) -> QueueService:
    """The platform's queue service (created at startup)."""
    found = platform.stash.get(SERVICE)
    if found is None:
        raise ApiError("queues are not available: the queue plugin did not start")
    return found


async def _client(request: Request) -> tuple[QueueService, ClientQueues, Session]:
    if request.session is None:
        raise ApiError(f"{request.command} needs a websocket connection to deliver messages to")
    queues = service(request.platform)
    return queues, await queues.client(request.session), request.session


def _expiration(value: Any, default: int) -> int:
    if value is None or value == "" or value == 0:
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ApiError("expiration must be a number of milliseconds") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError("expiration must be a number of milliseconds")
    if value != value or not 0 < value <= MAX_EXPIRATION_MS or value != int(value):
        raise ApiError(
            f"expiration must be a whole number of milliseconds between 1 and {MAX_EXPIRATION_MS}"
        )
    return int(value)


def _headers(data: dict[str, Any]) -> dict[str, Any]:
    return message_headers(data.get("headers"))


async def registerqueue(request: Request) -> dict[str, Any]:
    """Consume a queue on this connection: a new temporary queue when ``queuename`` is empty."""
    name = queue_name(request.data.get("queuename"))
    queues, client, session = await _client(request)
    if not name:
        name = temporary_name(session.clientagent)
        await client.add_queue(name, temporary=True)
    else:
        await queues.check_consume(request.user, name)
        await client.add_queue(name, temporary=False)
    return {"queuename": name}


async def registerexchange(request: Request) -> dict[str, Any]:
    """Declare an exchange; with ``addqueue`` (default) bind a new temporary queue to it."""
    data = request.data
    algorithm = data.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.lower() not in _ALGORITHMS:
        raise ApiError(
            f"algorithm must be one of {', '.join(EXCHANGE_TYPES)} (got {str(algorithm)[:40]!r})"
        )
    kind = _ALGORITHMS[algorithm.lower()]
    name = queue_name(data.get("exchangename"), "exchangename")
    routing_key = short_text(data.get("routingkey"), "routingkey")
    addqueue = data.get("addqueue", True)
    if not isinstance(addqueue, bool):
        raise ApiError("addqueue must be true or false")
    queues, client, session = await _client(request)
    if not name:
        name = temporary_name(session.clientagent)
    else:
        await queues.check_exchange(request.user, name)
    with broker_errors():
        await client.broker.declare_exchange(name, kind)
    client.exchanges.add(name)
    queuename = ""
    if addqueue:
        queuename = temporary_name(session.clientagent)
        await client.add_queue(queuename, temporary=True)
        with broker_errors():
            await client.broker.bind(queuename, name, routing_key, _headers(data))
    return {"exchangename": name, "queuename": queuename}


async def queuemessage(request: Request) -> dict[str, Any]:
    """Send ``data`` to a queue, or to an exchange with a routing key."""
    data = request.data
    queue = queue_name(data.get("queuename"))
    exchange = queue_name(data.get("exchangename"), "exchangename")
    if not queue and not exchange:
        raise ApiError("queuemessage needs a queuename or an exchangename")
    routing_key = short_text(data.get("routingkey"), "routingkey")
    reply_to = queue_name(data.get("replyto"), "replyto")
    correlation_id = short_text(data.get("correlationId"), "correlationId") or new_id()
    expiration = _expiration(
        data.get("expiration"), request.platform.config.section(QueuesConfig).default_expiration_ms
    )
    payload = data.get("data")
    if isinstance(payload, dict):
        payload = dict(payload)
        if data.get("striptoken"):
            payload.pop("__jwt", None)
            payload.pop("__user", None)
        else:
            token = data.get("jwt") or (request.session.jwt if request.session else "")
            payload["__jwt"] = token
            payload["__user"] = request.user.token_user()
    routed = await service(request.platform).send(
        request.user,
        queue="" if exchange else queue,
        exchange=exchange,
        routing_key=routing_key,
        payload=payload,
        reply_to=reply_to,
        correlation_id=correlation_id,
        expiration_ms=expiration,
        headers=_headers(data),
    )
    if not routed and not exchange and not reply_to:
        raise ApiError(f"queue {queue!r} does not exist: nobody has registered it")
    return {"correlationId": correlation_id}


async def closequeue(request: Request) -> dict[str, Any]:
    """Stop this connection's consumer of ``queuename`` (a temporary queue is deleted)."""
    name = queue_name(request.data.get("queuename"))
    if not name:
        raise ApiError("closequeue needs a queuename")
    _queues, client, _session = await _client(request)
    if not await client.cancel(name):
        raise ApiError(f"this connection does not consume queue {name!r}")
    return {}


def queueevent(data: dict[str, Any]) -> dict[str, Any]:
    """The ``QueueEvent`` push of a delivered message."""
    values = {
        key: str(data.get(key) or "")
        for key in ("queuename", "correlationId", "replyto", "routingkey", "exchangename")
    }
    return {**values, "data": jsonutil.dumps(data.get("data"))}
