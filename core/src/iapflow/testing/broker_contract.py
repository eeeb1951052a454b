"""The broker contract suite: what every messaging backend must do, as the queue service uses it.

Subclass :class:`BrokerContract` in the plugin's tests and provide a ``broker`` fixture that
yields a started :class:`iapflow.contracts.broker.Broker`::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        async def broker(self): ...

Names are unique per test, so the suite can run against a shared server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from iapflow.contracts.broker import (
    Broker,
    BrokerSession,
    Conflict,
    Delivery,
    NotFound,
    OutgoingMessage,
)


def _name(prefix: str) -> str:
    return f"contract-{prefix}-{uuid.uuid4().hex[:10]}"


async def _nothing_lost(kind: str, name: str) -> None:
    raise AssertionError(f"{kind} {name} lost")


class Collector:
    """A consumer that records deliveries; ``ack`` False leaves them unacknowledged."""

    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.put_nowait(delivery)
        if self.ack:
            await delivery.ack()

    async def get(self, wait: float = 5) -> Delivery:
        return await asyncio.wait_for(self.deliveries.get(), wait)

    async def nothing(self, wait: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.deliveries.get(), wait)


def _msg(body: Any, **fields: Any) -> OutgoingMessage:
    return OutgoingMessage(json.dumps(body).encode(), **fields)


class BrokerContract:
    """Queues, exchanges, acknowledgements, dead-lettering and session clean-up."""

    async def _session(self, broker: Broker) -> BrokerSession:
        return await broker.open_session(_nothing_lost, prefetch=10)

    async def test_named_queue_keeps_messages_and_competing_consumers_share(
        self, broker: Broker
    ) -> None:
        name = _name("named")
        one, two = await self._session(broker), await self._session(broker)
        await one.declare_queue(name, temporary=False)
        assert await broker.publish(_msg({"i": 0}), queue=name)
        first, second = Collector(), Collector()
        await one.consume(name, first)
        assert json.loads((await first.get()).body) == {"i": 0}
        await two.declare_queue(name, temporary=False)
        await two.consume(name, second)
        for i in range(1, 11):
            assert await broker.publish(_msg({"i": i}), queue=name)
        seen = []
        for collector in (first, second):
            while True:
                try:
                    seen.append(json.loads((await collector.get(0.5)).body)["i"])
                except TimeoutError:
                    break
        assert sorted(seen) == list(range(1, 11))
        await one.close()
        await two.close()
        assert await broker.queue_exists(name)
        await broker.delete_queue(name)
        assert not await broker.queue_exists(name)

    async def test_delivery_fields(self, broker: Broker) -> None:
        name = _name("fields")
        session = await self._session(broker)
        await session.declare_queue(name, temporary=True)
        collector = Collector()
        tag = await session.consume(name, collector)
        await broker.publish(
            _msg({"a": 1}, reply_to="someone", correlation_id="c-1", headers={"h": "v"}),
            queue=name,
        )
        got = await collector.get()
        assert (got.queue, got.reply_to, got.correlation_id, got.consumer_tag) == (
            name,
            "someone",
            "c-1",
            tag,
        )
        assert got.routing_key == name and got.exchange == ""
        assert got.headers.get("h") == "v"
        await session.close()

    async def test_exchange_exists_once_declared(self, broker: Broker) -> None:
        name = _name("exists")
        assert not await broker.exchange_exists(name)
        session = await self._session(broker)
        await session.declare_exchange(name, "fanout")
        assert await broker.exchange_exists(name)
        await session.close()

    async def test_temporary_queue_goes_with_its_session(self, broker: Broker) -> None:
        name = _name("temp")
        session = await self._session(broker)
        await session.declare_queue(name, temporary=True)
        await session.consume(name, Collector())
        assert await broker.queue_exists(name)
        await session.close()
        await asyncio.sleep(0.1)
        assert not await broker.queue_exists(name)
        assert not await broker.publish(_msg({}), queue=name)

    async def test_nack_requeues_and_close_returns_unacked(self, broker: Broker) -> None:
        name = _name("nack")
        one = await self._session(broker)
        await one.declare_queue(name, temporary=False)
        holder = Collector(ack=False)
        await one.consume(name, holder)
        await broker.publish(_msg({"n": 1}), queue=name)
        first = await holder.get()
        await first.nack(requeue=True)
        again = await holder.get()
        assert again.redelivered and json.loads(again.body) == {"n": 1}
        await one.close()  # unacknowledged: back to the queue
        two = await self._session(broker)
        taker = Collector()
        await two.consume(name, taker)
        assert json.loads((await taker.get()).body) == {"n": 1}
        await taker.nothing()
        await two.close()
        await broker.delete_queue(name)

    async def test_cancel_stops_delivery(self, broker: Broker) -> None:
        name = _name("cancel")
        session = await self._session(broker)
        await session.declare_queue(name, temporary=False)
        collector = Collector()
        await session.consume(name, collector)
        assert await session.cancel(name)
        assert not await session.cancel(name)
        await broker.publish(_msg({}), queue=name)
        await collector.nothing()
        await session.close()
        await broker.delete_queue(name)

    @pytest.mark.parametrize(
        ("kind", "bindings", "routing_key", "headers", "expected"),
        [
            ("fanout", [("", None), ("x", None)], "any", {}, [0, 1]),
            ("direct", [("red", None), ("blue", None)], "red", {}, [0]),
            ("topic", [("a.*", None), ("a.#", None), ("b.#", None)], "a.b.c", {}, [1]),
            ("topic", [("a.*", None), ("a.#", None)], "a.b", {}, [0, 1]),
            (
                "headers",
                [("", {"kind": "x"}), ("", {"x-match": "any", "kind": "y", "n": 1})],
                "",
                {"kind": "y"},
                [1],
            ),
        ],
    )
    async def test_exchange_routing(
        self,
        broker: Broker,
        kind: str,
        bindings: list[tuple[str, dict[str, Any] | None]],
        routing_key: str,
        headers: dict[str, Any],
        expected: list[int],
    ) -> None:
        exchange = _name(kind)
        session = await self._session(broker)
        await session.declare_exchange(exchange, kind)
        collectors = []
        for index, (key, arguments) in enumerate(bindings):
            queue = f"{exchange}.{index}"
            await session.declare_queue(queue, temporary=True)
            await session.bind(queue, exchange, key, arguments)
            collector = Collector()
            await session.consume(queue, collector)
            collectors.append(collector)
        routed = await broker.publish(
            _msg({"k": 1}, headers=headers), exchange=exchange, routing_key=routing_key
        )
        assert routed == bool(expected)
        for index, collector in enumerate(collectors):
            if index in expected:
                got = await collector.get()
                assert got.exchange == exchange and got.routing_key == routing_key
            else:
                await collector.nothing(0.2)
        await session.close()

    async def test_exchange_type_conflict_and_missing_exchange(self, broker: Broker) -> None:
        exchange = _name("conflict")
        session = await self._session(broker)
        await session.declare_exchange(exchange, "fanout")
        await session.declare_exchange(exchange, "fanout")
        with pytest.raises(Conflict):
            await session.declare_exchange(exchange, "direct")
        with pytest.raises(NotFound):
            await broker.publish(_msg({}), exchange=_name("missing"))
        assert await broker.publish(_msg({}), exchange=exchange) is False
        await session.close()

    async def test_unroutable_request_gets_timeout(self, broker: Broker) -> None:
        reply = _name("reply")
        session = await self._session(broker)
        await session.declare_queue(reply, temporary=True)
        collector = Collector()
        await session.consume(reply, collector)
        routed = await broker.publish(
            _msg({"ask": 1, "__jwt": "secret"}, reply_to=reply, correlation_id="u-1"),
            queue=_name("nobody"),
        )
        assert routed is False
        got = await collector.get()
        assert got.correlation_id == "u-1"
        assert json.loads(got.body) == {"ask": 1, "command": "timeout"}
        await session.close()

    async def test_expired_request_gets_timeout(self, broker: Broker) -> None:
        target, reply = _name("slow"), _name("reply")
        session = await self._session(broker)
        await session.declare_queue(target, temporary=False)
        await session.declare_queue(reply, temporary=True)
        collector = Collector()
        await session.consume(reply, collector)
        await broker.publish(
            _msg({"ask": 2}, reply_to=reply, correlation_id="e-1", expiration_ms=100),
            queue=target,
        )
        got = await collector.get()
        assert got.correlation_id == "e-1"
        assert json.loads(got.body)["command"] == "timeout"
        # Without a reply queue an expired message just goes.
        await broker.publish(_msg({"x": 1}, expiration_ms=50), queue=target)
        await asyncio.sleep(0.3)
        drain = Collector()
        await session.consume(target, drain)
        await drain.nothing()
        await session.close()
        await broker.delete_queue(target)
