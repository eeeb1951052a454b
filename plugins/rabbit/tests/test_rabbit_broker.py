"""iapflow-rabbit against the RabbitMQ on 127.0.0.1:5672: the broker contract suite, its
options, and Nagle's algorithm switched off on the AMQP socket."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iapflow.contracts.broker import BrokerContext, BrokerError
from iapflow.errors import ConfigError
from iapflow.testing.broker_contract import BrokerContract
from iapflow_rabbit.broker import RabbitBroker, build_broker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def rabbit(tmp_path: Path) -> AsyncIterator[RabbitBroker]:
    broker = build_broker({"amqp_url": AMQP_URL}, BrokerContext(tmp_path))
    await broker.start()
    yield broker
    await broker.stop()


class TestRabbitBroker(BrokerContract):
    @pytest.fixture
    async def broker(self, rabbit: RabbitBroker) -> RabbitBroker:
        return rabbit


async def test_amqp_socket_has_nagle_off(rabbit: RabbitBroker) -> None:
    assert rabbit.socket is not None
    assert rabbit.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_bad_options_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"messaging\.amqp_url"):
        build_broker({"amqp_url": "http://x"}, BrokerContext(tmp_path))
    with pytest.raises(ConfigError, match=r"messaging\.colour"):
        build_broker({"colour": "red"}, BrokerContext(tmp_path))
    with pytest.raises(ConfigError, match=r"messaging\.reconnect_delay_seconds"):
        build_broker({"reconnect_delay_seconds": 0}, BrokerContext(tmp_path))


async def test_unreachable_server_fails_start_clearly(tmp_path: Path) -> None:
    broker = build_broker({"amqp_url": "amqp://guest:secret@127.0.0.1:1/"}, BrokerContext(tmp_path))
    with pytest.raises(BrokerError, match=r"cannot connect to amqp://guest:\*\*\*@127.0.0.1:1"):
        await broker.start()
