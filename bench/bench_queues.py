#!/usr/bin/env python
"""Queue messaging through iapflow against raw aio-pika on the same RabbitMQ, in one run.

Three cases, each on both sides:

- request/reply round trips per second with 1 request in flight,
- the same with 20 requests in flight,
- one-way messages per second (20 sends in flight, counted when the consumer has them).

iapflow side: ``iapflow serve`` as a separate process with ``[messaging] backend = "rabbit"``,
and two JSON websocket clients in this process (signed in as two normal users): a requester
with a temporary reply queue and a worker consuming a named queue; the worker answers each
``queuemessage`` push (which acknowledges it) and sends the reply with ``queuemessage`` to
``replyto`` with the same ``correlationId``.

aio-pika side: the same shape straight on RabbitMQ: two AMQP connections in this process,
publisher confirms and ``mandatory`` on publish (as iapflow publishes), persistent delivery
mode, manual acknowledgements, a temporary reply queue and a durable named service queue
(iapflow's named queues are durable).

Next to each rate: CPU microseconds per operation of the iapflow server, of RabbitMQ and of
this (client) process. ``--profile FILE`` records the server with py-spy (raw collapsed
stacks, native frames included) during the iapflow cases.

Run from the repository root with RabbitMQ on 127.0.0.1:5672 (guest/guest):
``.venv/bin/python bench/bench_queues.py`` (``--seconds`` per case and side, default 5).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from bench_api import ADMIN_PASSWORD, ADMIN_USER, ServerProcess, cpu_seconds, self_cpu_seconds

from iapflow.testing.client import JsonClient
from iapflow_mongo.embedded import EmbeddedServer

PAYLOAD = {"text": "x" * 200, "n": 0}


async def timed(one: Callable[[], Awaitable[None]], in_flight: int, seconds: float) -> float:
    """Run ``one`` in ``in_flight`` loops for ``seconds``; completed calls per second."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await one()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(in_flight)))
    return done / (time.perf_counter() - start)


# -- iapflow -----------------------------------------------------------------------------------


class IapflowSide:
    """Requester and worker as JSON websocket clients of one iapflow server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.ids = itertools.count()
        self.received = 0

    async def setup(self) -> None:
        admin = JsonClient(self.url)
        await admin.connect()
        await admin.signin(ADMIN_USER, ADMIN_PASSWORD)
        names = []
        for role in ("worker", "requester"):
            name = f"bench{role}{uuid.uuid4().hex[:6]}"
            await admin.call(
                "insertone",
                collectionname="users",
                item={"_type": "user", "username": name, "name": name, "newpassword": "pw"},
            )
            names.append(name)
        await admin.close()
        self.worker, self.requester = JsonClient(self.url), JsonClient(self.url)
        for client, name in ((self.worker, names[0]), (self.requester, names[1])):
            await client.connect()
            await client.signin(name, "pw")
        self.service = f"bench-svc-{uuid.uuid4().hex[:8]}"
        self.sink = f"bench-sink-{uuid.uuid4().hex[:8]}"
        self.worker.on_push = self._worker_push
        self.requester.on_push = self._requester_push
        await self.worker.call("registerqueue", queuename=self.service)
        await self.worker.call("registerqueue", queuename=self.sink)
        for queue in (self.service, self.sink):
            found = await self.worker.call("query", collectionname="mq", query={"name": queue})
            doc = found["result"][0]
            doc["_acl"].append({"_id": self.requester.user["_id"], "rights": 2})
            await self.worker.call("updateone", collectionname="mq", item=doc)
        self.reply_queue = (await self.requester.call("registerqueue", queuename=""))["queuename"]

    async def _worker_push(self, command: str, data: dict[str, Any], push_id: str) -> None:
        if command != "queuemessage":
            return
        await self.worker.answer(push_id, "queuemessage")
        if data["queuename"] == self.sink:
            self.received += 1
            return
        await self.worker.call(
            "queuemessage",
            queuename=data["replyto"],
            correlationId=data["correlationId"],
            data={"ok": True},
            striptoken=True,
        )

    async def _requester_push(self, command: str, data: dict[str, Any], push_id: str) -> None:
        if command != "queuemessage":
            return
        await self.requester.answer(push_id, "queuemessage")
        future = self.pending.pop(data["correlationId"], None)
        if future is not None and not future.done():
            future.set_result(None)

    async def round_trip(self) -> None:
        correlation = f"c{next(self.ids)}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[correlation] = future
        await self.requester.call(
            "queuemessage",
            queuename=self.service,
            replyto=self.reply_queue,
            correlationId=correlation,
            data=PAYLOAD,
        )
        await future

    async def one_way(self) -> None:
        await self.requester.call("queuemessage", queuename=self.sink, data=PAYLOAD)

    async def close(self) -> None:
        await self.worker.close()
        await self.requester.close()


# -- raw aio-pika ------------------------------------------------------------------------------


class RawSide:
    """The same two parties straight on RabbitMQ with aio-pika."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.ids = itertools.count()
        self.received = 0
        self.body = json.dumps(PAYLOAD).encode()

    async def setup(self) -> None:
        self.worker_conn = await aio_pika.connect(self.amqp_url)
        self.requester_conn = await aio_pika.connect(self.amqp_url)
        self.worker = await self.worker_conn.channel(publisher_confirms=True, on_return_raises=True)
        self.requester = await self.requester_conn.channel(
            publisher_confirms=True, on_return_raises=True
        )
        await self.worker.set_qos(prefetch_count=25)
        await self.requester.set_qos(prefetch_count=25)
        self.service = f"raw-svc-{uuid.uuid4().hex[:8]}"
        self.sink = f"raw-sink-{uuid.uuid4().hex[:8]}"
        # Durable, as iapflow declares named queues (messages are published persistent on both
        # sides, so RabbitMQ writes them to disk on both sides).
        service = await self.worker.declare_queue(self.service, durable=True)
        sink = await self.worker.declare_queue(self.sink, durable=True)
        self.queues = [service, sink]
        await service.consume(self._serve)
        await sink.consume(self._sink)
        reply = await self.requester.declare_queue(
            f"raw-reply-{uuid.uuid4().hex[:8]}", auto_delete=True
        )
        self.reply_queue = reply.name
        await reply.consume(self._reply)

    def _message(self, body: bytes, **fields: Any) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            expiration=60,
            content_type="application/json",
            **fields,
        )

    async def _serve(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        await self.worker.default_exchange.publish(
            self._message(b'{"ok":true}', correlation_id=message.correlation_id),
            routing_key=message.reply_to or "",
            mandatory=True,
        )

    async def _sink(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self.received += 1

    async def _reply(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        future = self.pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(None)

    async def round_trip(self) -> None:
        correlation = f"c{next(self.ids)}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[correlation] = future
        await self.requester.default_exchange.publish(
            self._message(self.body, correlation_id=correlation, reply_to=self.reply_queue),
            routing_key=self.service,
            mandatory=True,
        )
        await future

    async def one_way(self) -> None:
        await self.requester.default_exchange.publish(
            self._message(self.body), routing_key=self.sink, mandatory=True
        )

    async def close(self) -> None:
        for queue in self.queues:
            await queue.delete(if_unused=False, if_empty=False)
        await self.worker_conn.close()
        await self.requester_conn.close()


async def one_way_rate(side: IapflowSide | RawSide, seconds: float) -> float:
    """Messages per second that reached the consumer (sends with 20 in flight)."""
    start_count = side.received
    start = time.perf_counter()
    await timed(side.one_way, 20, seconds)
    deadline = time.perf_counter() + 10
    sent_estimate = None
    while time.perf_counter() < deadline:  # let the consumer drain what was sent
        before = side.received
        await asyncio.sleep(0.2)
        if side.received == before:
            sent_estimate = side.received
            break
    received = (sent_estimate or side.received) - start_count
    return received / (time.perf_counter() - start - 0.2)


def rabbit_pid() -> int | None:
    """The RabbitMQ node's process (for its CPU time), when it runs on this machine."""
    found = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True)
    return int(found.stdout.split()[0]) if found.stdout.strip() else None


class Cpu:
    """CPU seconds of the server, RabbitMQ and this process over one measured case."""

    def __init__(self, server: int | None, rabbit: int | None) -> None:
        self.pids = {"server": server, "rabbit": rabbit}

    def now(self) -> dict[str, float]:
        found = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        found["clients"] = self_cpu_seconds()
        return found

    async def measure(self, run: Awaitable[float], seconds: float) -> tuple[float, str]:
        """The rate ``run`` returns and CPU microseconds per operation, as text."""
        before = self.now()
        rate = await run
        after = self.now()
        operations = max(rate * seconds, 1.0)
        shown = " ".join(
            f"{name} {(after[name] - before[name]) / operations * 1e6:.0f}" for name in after
        )
        return rate, shown


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-queues-"))
    store = EmbeddedServer(str(work / "mongo"), sync_on_commit=False)
    store.start()
    messaging = f'[messaging]\nbackend = "rabbit"\namqp_url = {json.dumps(args.amqp_url)}\n'
    server = ServerProcess(work, store.uri, "benchq", extra_config=messaging)
    try:
        server.start()
        iapflow, raw = IapflowSide(server.url), RawSide(args.amqp_url)
        await iapflow.setup()
        await raw.setup()
        for side in (iapflow, raw):  # warm-up
            await timed(side.round_trip, 5, 0.5)
        assert server.process is not None
        cpu = Cpu(server.process.pid, rabbit_pid())
        profiler = None
        if args.profile:
            py_spy = Path(sys.executable).parent / "py-spy"
            command = [str(py_spy), "record", "--format", "raw", "--native", "-r", "250"]
            command += ["-o", args.profile, "-p", str(server.process.pid)]
            profiler = subprocess.Popen(  # noqa: ASYNC220 - started once, before the cases
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1)
        load = os.getloadavg()[0]
        rows = []
        for label, in_flight in (
            ("request/reply, 1 in flight", 1),
            ("request/reply, 20 in flight", 20),
        ):
            seconds = args.seconds
            api = await cpu.measure(timed(iapflow.round_trip, in_flight, seconds), seconds)
            direct = await cpu.measure(timed(raw.round_trip, in_flight, seconds), seconds)
            rows.append((label, "round trips/s", api, direct))
        api = await cpu.measure(one_way_rate(iapflow, args.seconds), args.seconds)
        direct = await cpu.measure(one_way_rate(raw, args.seconds), args.seconds)
        rows.append(("one-way, 20 sends in flight", "messages/s", api, direct))
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        await iapflow.close()
        await raw.close()
        print(f"load average (1 min) at start: {load:.2f} on {os.cpu_count()} cores")
        print(f"{'case':32} {'unit':14} {'iapflow':>10} {'aio-pika':>10} {'ratio':>7}")
        for label, unit, (api, _), (direct, _) in rows:
            print(f"{label:32} {unit:14} {api:10.0f} {direct:10.0f} {api / direct:7.2f}")
        print("CPU microseconds per operation")
        for label, _unit, (_, api_cpu), (_, direct_cpu) in rows:
            print(f"  {label:32} iapflow:  {api_cpu}")
            print(f"  {'':32} aio-pika: {direct_cpu}")
    finally:
        server.stop()
        store.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per case and side")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--profile", default="", help="py-spy raw profile of the server to FILE")
    asyncio.run(main(parser.parse_args()))
