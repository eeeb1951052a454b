"""The in-process broker passes the broker contract suite (RabbitMQ runs it in
plugins/rabbit/tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iapflow.builtin.memory.broker import MemoryBroker, build_memory_broker
from iapflow.contracts.broker import BrokerContext, OutgoingMessage
from iapflow.testing.broker_contract import BrokerContract, Collector


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    async def broker(self, tmp_path: Path) -> AsyncIterator[MemoryBroker]:
        broker = build_memory_broker({}, BrokerContext(tmp_path))
        await broker.start()
        yield broker
        await broker.stop()


async def _noop(kind: str, name: str) -> None:
    return None


async def test_named_queue_messages_survive_a_restart(tmp_path: Path) -> None:
    broker = MemoryBroker(tmp_path)
    await broker.start()
    session = await broker.open_session(_noop)
    await session.declare_queue("kept", temporary=False)
    await session.declare_queue("gone", temporary=True)
    for i in range(3):
        await broker.publish(OutgoingMessage(f'{{"i":{i}}}'.encode()), queue="kept")
    await broker.publish(OutgoingMessage(b"{}"), queue="gone")
    taker = Collector(ack=False)
    await session.consume("kept", taker)
    first = await taker.get()
    assert first.body == b'{"i":0}'
    await first.ack()  # acknowledged: gone; the other two were delivered but not acknowledged
    await session.close()
    await broker.stop()

    again = MemoryBroker(tmp_path)
    await again.start()
    assert await again.queue_exists("kept") and not await again.queue_exists("gone")
    session = await again.open_session(_noop)
    taker = Collector()
    await session.consume("kept", taker)
    assert [(await taker.get()).body for _ in range(2)] == [b'{"i":1}', b'{"i":2}']
    await taker.nothing()
    await again.stop()


async def test_persist_false_and_bad_options(tmp_path: Path) -> None:
    from iapflow.errors import ConfigError

    broker = build_memory_broker({"persist": "false"}, BrokerContext(tmp_path))
    await broker.start()
    await broker.stop()
    assert not (tmp_path / "broker").exists()
    with pytest.raises(ConfigError, match=r"messaging\.size"):
        build_memory_broker({"size": 1}, BrokerContext(tmp_path))
