"""``query`` of one document by ``_id`` over the three protocols, in one run.

JSON websocket (``/ws``), protobuf over websocket (``/ws/v2``) and protobuf over gRPC
(``openiap.FlowService/SetupStream``), each with C concurrent connections of its own making
sequential round trips against one ``iapflow serve`` process, interleaved A-B-C-C-B-A.
Prints round trips per second and each protocol's ratio to the JSON websocket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import ADMIN_PASSWORD, ADMIN_USER, HOST, ServerProcess

from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.testing.client import JsonClient
from iapflow_mongo.embedded import EmbeddedServer, free_port

Query = Callable[[], Awaitable[None]]


class ProtoWs:
    """A minimal /ws/v2 client: length-prefixed Envelopes, replies matched by ``rid``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None
        self.seq = 0

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, compression=None, max_size=2**26)

    async def call(self, command: str, message: Any) -> pb.Envelope:
        self.seq += 1
        envelope = pb.Envelope(command=command, id=str(self.seq), seq=self.seq)
        envelope.data.Pack(message)
        payload = envelope.SerializeToString()
        await self.ws.send(struct.pack("<I", len(payload)) + payload)
        while True:
            length = struct.unpack("<I", await self.ws.recv())[0]
            body = b""
            while len(body) < length:
                body += await self.ws.recv()
            reply = pb.Envelope()
            reply.ParseFromString(body)
            if reply.rid == envelope.id:
                if reply.command == "error":
                    raise RuntimeError(f"{command} failed")
                return reply

    async def close(self) -> None:
        await self.ws.close()


class ProtoGrpc:
    """A minimal gRPC client on SetupStream: one bidirectional stream per client."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stream: Any = None
        self.seq = 0

    async def connect(self) -> None:
        method = self.channel.stream_stream(
            "/openiap.FlowService/SetupStream",
            request_serializer=pb.Envelope.SerializeToString,
            response_deserializer=pb.Envelope.FromString,
        )
        self.stream = method()

    async def call(self, command: str, message: Any) -> pb.Envelope:
        self.seq += 1
        envelope = pb.Envelope(command=command, id=str(self.seq), seq=self.seq)
        envelope.data.Pack(message)
        await self.stream.write(envelope)
        while True:
            reply = await self.stream.read()
            if reply.rid == envelope.id:
                if reply.command == "error":
                    raise RuntimeError(f"{command} failed")
                return reply

    async def close(self) -> None:
        self.stream.cancel()
        await self.channel.close()


async def proto_client(client: ProtoWs | ProtoGrpc, doc_id: str) -> Query:
    await client.connect()
    await client.call("signin", pb.SigninRequest(username=ADMIN_USER, password=ADMIN_PASSWORD))
    request = pb.QueryRequest(collectionname="bench", query=json.dumps({"_id": doc_id}), top=1)

    async def query() -> None:
        await client.call("query", request)

    return query


async def json_client(url: str, doc_id: str) -> Query:
    client = JsonClient(url)
    await client.connect()
    await client.signin(ADMIN_USER, ADMIN_PASSWORD)

    async def query() -> None:
        reply = await client.call("query", collectionname="bench", query={"_id": doc_id}, top=1)
        assert len(reply["result"]) == 1

    return query


async def measure(queries: list[Query], seconds: float) -> float:
    count = 0
    deadline = time.monotonic() + seconds

    async def loop(query: Query) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await query()
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(q) for q in queries))
    return count / (time.monotonic() - started)


async def run(
    server: ServerProcess, grpc_port: int, clients: int, seconds: float
) -> dict[str, float]:
    seed = JsonClient(server.url)
    await seed.connect()
    await seed.signin(ADMIN_USER, ADMIN_PASSWORD)
    doc_id = (await seed.call("insertone", collectionname="bench", item={"v": 1}))["result"]["_id"]
    await seed.close()
    base = f"ws://{HOST}:{server.port}"
    sides: dict[str, list[Query]] = {
        "json ws": [await json_client(base + "/ws", doc_id) for _ in range(clients)],
        "proto ws": [await proto_client(ProtoWs(base + "/ws/v2"), doc_id) for _ in range(clients)],
        "grpc": [
            await proto_client(ProtoGrpc(f"{HOST}:{grpc_port}"), doc_id) for _ in range(clients)
        ],
    }
    for queries in sides.values():  # warm-up
        await measure(queries, 0.5)
    totals = {name: 0.0 for name in sides}
    order = list(sides) + list(reversed(sides))
    for name in order:
        totals[name] += await measure(sides[name], seconds / 2) / 2
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per protocol (default 5)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="iapflow-bench-proto-") as tmp:
        store = EmbeddedServer(str(Path(tmp) / "store"), sync_on_commit=True)
        store.start()
        server = ServerProcess(Path(tmp), store.uri, "bench", None)
        grpc_port = free_port()
        with server.config.open("a") as config:
            config.write(f"[grpc]\nport = {grpc_port}\n")
        try:
            server.start()
            print(
                f"{'clients':>7}  {'json ws rt/s':>12}  {'proto ws rt/s':>13}  {'grpc rt/s':>10}  "
                f"{'proto/json':>10}  {'grpc/json':>9}"
            )
            for clients in args.clients:
                rates = asyncio.run(run(server, grpc_port, clients, args.seconds))
                base = rates["json ws"]
                print(
                    f"{clients:>7}  {base:>12.0f}  {rates['proto ws']:>13.0f}  "
                    f"{rates['grpc']:>10.0f}  {rates['proto ws'] / base:>10.2f}  "
                    f"{rates['grpc'] / base:>9.2f}"
                )
        finally:
            server.stop()
            store.stop()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
