"""Queue faults and scale-out: a RabbitMQ restart with automatic re-registration (and a queue
that cannot be restored), two server processes on one RabbitMQ and one store, the in-process
broker keeping waiting messages over a server restart, and a configured-but-missing broker
plugin."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from iapflow import hookimpl
from iapflow.config import build_config
from iapflow.contracts.broker import BrokerContext
from iapflow.errors import PluginError
from iapflow.platform import Platform
from iapflow.plugins import Plugins
from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server
from iapflow.testing.server import TEST_SECRET
from iapflow_mongo import plugin as mongo_plugin
from iapflow_rabbit.broker import RabbitBroker, build_broker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
RABBIT = {"backend": "rabbit", "amqp_url": AMQP_URL, "reconnect_delay_seconds": 0.5}


class Replier:
    """Answers every ``queuemessage`` push and keeps it (other pushes go to ``other``)."""

    def __init__(self, client: JsonClient) -> None:
        self.client = client
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.other: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        client.on_push = self._on_push

    async def _on_push(self, command: str, data: dict[str, Any], push_id: str) -> None:
        if command == "queuemessage":
            self.messages.put_nowait(data)
            await self.client.answer(push_id, "queuemessage")
        else:
            self.other.put_nowait((command, data))

    async def get(self, wait: float = 15) -> dict[str, Any]:
        return await asyncio.wait_for(self.messages.get(), wait)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def signed_in(url: str) -> JsonClient:
    client = JsonClient(url)
    await client.connect()
    await client.signin("admin", "admin")
    return client


@pytest.mark.slow
async def test_rabbitmq_restart_re_registers_queues_and_exchanges(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    config = make_test_config(tmp_path, mongo_storage, messaging=RABBIT)
    named, exchange = f"keep-{uuid.uuid4().hex[:8]}", f"ex-{uuid.uuid4().hex[:8]}"
    async with running_server(config) as base:
        consumer, sender = await signed_in(base + "/ws"), await signed_in(base + "/ws")
        inbox = Replier(consumer)
        temp = (await consumer.call("registerqueue", queuename=""))["queuename"]
        await consumer.call("registerqueue", queuename=named)
        bound = await consumer.call("registerexchange", exchangename=exchange, algorithm="fanout")
        try:
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            with pytest.raises(ReplyError, match="unavailable"):
                await sender.call("queuemessage", queuename=temp, data={"during": 1})
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(rabbitmqctl, "await_startup")
        deadline = time.monotonic() + 30
        while True:  # the server reconnects by itself; wait until sends work again
            try:
                await sender.call("queuemessage", queuename=temp, data={"after": 1})
                break
            except ReplyError:
                assert time.monotonic() < deadline, "the server did not reconnect to RabbitMQ"
                await asyncio.sleep(0.3)
        assert (await inbox.get())["data"]["after"] == 1
        await sender.call("queuemessage", queuename=named, data={"named": 1})
        assert (await inbox.get())["data"]["named"] == 1
        await sender.call("queuemessage", exchangename=exchange, data={"fan": 1})
        got = await inbox.get()
        assert got["data"]["fan"] == 1 and got["queuename"] == bound["queuename"]
        assert inbox.other.empty()  # nothing was reported lost
        await consumer.close()
        await sender.close()


class HookedRabbit:
    """A plugin adding messaging backend ``rabbit-hooked``: the rabbit backend, with the broker
    kept here so that a test can set its ``before_restore`` hook."""

    def __init__(self) -> None:
        self.brokers: list[RabbitBroker] = []

    @hookimpl
    def register_brokers(self, register: Callable[[str, Any], None]) -> None:
        def build(options: Mapping[str, Any], context: BrokerContext) -> RabbitBroker:
            broker = build_broker(options, context)
            self.brokers.append(broker)
            return broker

        register("rabbit-hooked", build)


async def send_until_it_works(client: JsonClient, **fields: Any) -> None:
    """Send, retrying while the server is still reconnecting and re-registering."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.call("queuemessage", **fields)
            return
        except ReplyError:
            assert time.monotonic() < deadline, "the server did not reconnect to RabbitMQ"
            await asyncio.sleep(0.3)


@pytest.mark.slow
async def test_queue_that_cannot_be_restored_after_a_rabbitmq_restart_is_reported_closed(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    # After the restart, and before the server re-registers its clients (the broker's
    # before_restore hook, so no race), another AMQP connection declares one of the client's
    # temporary queues as exclusive to itself: restoring it fails with RESOURCE_LOCKED.
    config = make_test_config(
        tmp_path, mongo_storage, messaging={**RABBIT, "backend": "rabbit-hooked"}
    )
    plugins = Plugins()
    hooked = HookedRabbit()
    plugins.register(hooked, name="rabbit-hooked")
    named = f"keep-{uuid.uuid4().hex[:8]}"
    raw: list[AbstractConnection] = []
    async with running_server(config, plugins) as base:
        (broker,) = hooked.brokers
        consumer, sender = await signed_in(base + "/ws"), await signed_in(base + "/ws")
        inbox = Replier(consumer)
        taken = (await consumer.call("registerqueue", queuename=""))["queuename"]
        kept = (await consumer.call("registerqueue", queuename=""))["queuename"]
        await consumer.call("registerqueue", queuename=named)

        async def take_the_name() -> None:
            connection = await aio_pika.connect(AMQP_URL)
            raw.append(connection)
            channel = await connection.channel()
            await channel.declare_queue(broker.name(taken), exclusive=True)

        broker.before_restore = take_the_name
        try:
            try:
                await asyncio.to_thread(rabbitmqctl, "stop_app")
            finally:
                await asyncio.to_thread(rabbitmqctl, "start_app")
                await asyncio.to_thread(rabbitmqctl, "await_startup")
            command, data = await asyncio.wait_for(inbox.other.get(), 30)
            assert (command, data) == ("queueclosed", {"queuename": taken})
            assert raw, "the hook did not run"
            # The client's other queues came back and keep working.
            await send_until_it_works(sender, queuename=kept, data={"kept": 1})
            assert (await inbox.get())["data"]["kept"] == 1
            await sender.call("queuemessage", queuename=named, data={"named": 1})
            got = await inbox.get()
            assert got["data"]["named"] == 1 and got["queuename"] == named
            # The lost queue is no longer this connection's.
            with pytest.raises(ReplyError, match="does not consume"):
                await consumer.call("closequeue", queuename=taken)
            await consumer.call("closequeue", queuename=kept)
            assert inbox.other.empty()  # only the one queue was reported lost
        finally:
            for connection in raw:
                await connection.close()
        await consumer.close()
        await sender.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
async def test_two_server_processes_share_rabbitmq_and_the_store(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    # Server one runs in this process, server two as a separate `iapflow serve` process.
    config = make_test_config(tmp_path / "one", mongo_storage, messaging=RABBIT)
    port = _free_port()
    settings = {
        "server": {"host": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "two")},
        "storage": mongo_storage,
        "messaging": RABBIT,
        "auth": {"jwt_secret": TEST_SECRET, "bcrypt_rounds": 4},
    }
    toml = "\n".join(
        f"[{section}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
        for section, values in settings.items()
    )
    (tmp_path / "two.toml").write_text(toml)
    service = f"svc-{uuid.uuid4().hex[:8]}"
    async with running_server(config) as base:
        requester = await signed_in(base + "/ws")
        other = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on in the loop
            [sys.executable, "-m", "iapflow.cli", "serve", "--config", str(tmp_path / "two.toml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ},
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert other.poll() is None, other.stderr.read() if other.stderr else ""
                try:
                    worker = await signed_in(f"ws://127.0.0.1:{port}/ws")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "second server did not start"
                    await asyncio.sleep(0.2)

            async def answer(command: str, data: dict[str, Any], push_id: str) -> None:
                await worker.answer(push_id, "queuemessage")
                await worker.call(
                    "queuemessage",
                    queuename=data["replyto"],
                    correlationId=data["correlationId"],
                    data={"answer": data["data"]["question"] + 1},
                )

            worker.on_push = answer
            await worker.call("registerqueue", queuename=service)
            replies = Replier(requester)
            mine = (await requester.call("registerqueue", queuename=""))["queuename"]
            await requester.call(
                "queuemessage",
                queuename=service,
                replyto=mine,
                correlationId="x1",
                data={"question": 41},
            )
            got = await replies.get()
            assert got["correlationId"] == "x1" and got["data"]["answer"] == 42
            assert got["data"]["__user"]["username"] == "admin"
            await worker.close()
        finally:
            other.terminate()
            other.wait(30)
        await requester.close()


async def test_embedded_broker_keeps_waiting_messages_over_a_restart(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    name = f"durable-{uuid.uuid4().hex[:8]}"
    config = make_test_config(tmp_path, mongo_storage, messaging={"backend": "memory"})
    async with running_server(config) as base:
        client = await signed_in(base + "/ws")
        await client.call("registerqueue", queuename=name)
        await client.call("closequeue", queuename=name)
        for i in range(3):
            await client.call("queuemessage", queuename=name, data={"i": i}, expiration=600000)
        await client.close()
    again = make_test_config(tmp_path, mongo_storage, messaging={"backend": "memory"})
    async with running_server(again) as base:
        client = await signed_in(base + "/ws")
        inbox = Replier(client)
        await client.call("registerqueue", queuename=name)
        assert [(await inbox.get())["data"]["i"] for _ in range(3)] == [0, 1, 2]
        await client.close()


def test_configured_but_missing_broker_plugin_says_what_to_install(tmp_path: Path) -> None:
    config = build_config(
        {
            "server": {"data_dir": str(tmp_path)},
            "auth": {"jwt_secret": TEST_SECRET},
            "messaging": {"backend": "rabbit"},
        }
    )
    plugins = Plugins(load_entry_points=False)  # iapflow-rabbit is "not installed"
    plugins.register(mongo_plugin, name="mongo")
    platform = Platform(config, plugins)
    with pytest.raises(PluginError, match="pip install iapflow-rabbit"):
        platform.prepare()
