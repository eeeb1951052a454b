"""A small async client for the OpenIAP protobuf protocol over gRPC (tests and benchmarks).

It takes the same JSON-shaped requests as :class:`iapflow.testing.JsonClient` and encodes them
into the schema's messages with iapflow's own codec, so one test can attack both transports::

    async with GrpcClient("127.0.0.1:50051") as client:
        await client.signin("alice", "secret")
        reply = await client.call("query", collectionname="entities", query={})

Replies come back as dicts with JSON-holding string fields decoded. Pushes (``queueevent``,
``watchevent``, ``refreshtoken``) land in :attr:`GrpcClient.pushes` as ``(command, dict)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from iapflow.builtin.proto import codec as protocodec
from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.plugins import Plugins
from iapflow.testing.client import ReplyError

_METHOD = "/openiap.FlowService/SetupStream"
_PUSHES: dict[str, type[Message]] = {
    "queueevent": pb.QueueEvent,
    "watchevent": pb.WatchEvent,
    "refreshtoken": pb.RefreshToken,
}


def decode(msg: Message) -> dict[str, Any]:
    """A message as a dict, with string fields that hold JSON objects or lists decoded."""
    values: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    for key, value in list(values.items()):
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(ValueError):
                values[key] = json.loads(value)
    return values


@functools.cache
def _table() -> protocodec.ProtoTable:
    """The proto mappings of every installed plugin's commands (as a server would have)."""
    specs = {id(spec): spec for _name, spec in Plugins().commands().items()}
    return protocodec.ProtoTable.build(specs.values())


class GrpcClient:
    """One ``SetupStream`` call: a connection with its own sign-in, like a websocket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.jwt = ""
        self.user: dict[str, Any] = {}
        self.pushes: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Queue[pb.Envelope]] = {}
        self._outbox: asyncio.Queue[pb.Envelope | None] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def __aenter__(self) -> GrpcClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the stream and wait for the server's greeting ``ping``."""
        self._channel = grpc.aio.insecure_channel(self.address)
        call = self._channel.stream_stream(
            _METHOD,
            request_serializer=lambda e: e.SerializeToString(),
            response_deserializer=pb.Envelope.FromString,
        )(self._requests())
        greeting: asyncio.Queue[pb.Envelope] = asyncio.Queue()
        self._pending[""] = greeting
        self._reader = asyncio.get_running_loop().create_task(self._read(call))
        first = await asyncio.wait_for(greeting.get(), 15)
        assert first.command == "ping", first.command

    async def close(self) -> None:
        """End the stream and the channel."""
        self._outbox.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _requests(self) -> Any:
        while True:
            envelope = await self._outbox.get()
            if envelope is None:
                return
            yield envelope

    async def _read(self, call: Any) -> None:
        try:
            async for envelope in call:
                waiting = self._pending.get(envelope.rid)
                if waiting is not None and (envelope.rid or envelope.command == "ping"):
                    waiting.put_nowait(envelope)
                    if not envelope.rid:
                        self._pending.pop("", None)
                elif envelope.command in _PUSHES:
                    message: Message = protocodec.unpack(envelope.data, _PUSHES[envelope.command])
                    self.pushes.put_nowait((envelope.command, decode(message)))
        except grpc.aio.AioRpcError:
            pass
        finally:
            self.closed.set()

    def send(
        self, command: str, msg: Message | None, jwt: str = "", rid: str = "", answered: bool = True
    ) -> str:
        """Queue one envelope (``answered``: collect what answers it); return its id."""
        envelope = pb.Envelope(command=command, id=f"c{next(self._ids)}", jwt=jwt, rid=rid)
        if msg is not None:
            envelope.data.CopyFrom(protocodec.pack(msg))
        if answered:
            self._pending[envelope.id] = asyncio.Queue()
        self._outbox.put_nowait(envelope)
        return envelope.id

    async def _answers(self, envelope_id: str, wait: float) -> list[pb.Envelope]:
        """The envelopes answering ``envelope_id`` up to its reply or error."""
        queue = self._pending.setdefault(envelope_id, asyncio.Queue())
        found: list[pb.Envelope] = []
        try:
            while True:
                envelope = await asyncio.wait_for(queue.get(), wait)
                found.append(envelope)
                if envelope.command == "error" or envelope.command.endswith("reply"):
                    return found
        finally:
            self._pending.pop(envelope_id, None)

    @staticmethod
    def _raise_on_error(envelope: pb.Envelope) -> None:
        if envelope.command == "error":
            error = protocodec.unpack(envelope.data, pb.ErrorResponse)
            raise ReplyError(error.message, {"message": error.message})

    async def call(self, command: str, /, jwt: str = "", wait: float = 30, **data: Any) -> Any:
        """Send ``command`` with JSON-shaped ``data``; the decoded reply, or ReplyError."""
        spec = _table().commands[command]
        request = protocodec.fill(spec.request(), data)
        envelope_id = self.send(command, request, jwt)
        reply = (await self._answers(envelope_id, wait))[-1]
        self._raise_on_error(reply)
        return decode(protocodec.unpack(reply.data, spec.response))

    async def signin(self, username: str = "", password: str = "", **extra: Any) -> Any:
        """Sign the stream in and remember the token and user."""
        reply = await self.call("signin", username=username, password=password, **extra)
        self.jwt, self.user = reply.get("jwt", ""), reply.get("user", {})
        return reply

    async def upload(
        self, filename: str, content: bytes, mimetype: str = "", jwt: str = "", piece: int = 65536
    ) -> dict[str, Any]:
        """Upload ``content`` as ``filename`` in ``stream`` envelopes; the decoded reply."""
        request = pb.UploadRequest(filename=filename, mimetype=mimetype)
        envelope_id = self.send("upload", request, jwt)
        self.send("beginstream", pb.BeginStream(), rid=envelope_id, answered=False)
        for start in range(0, len(content), piece):
            chunk = pb.Stream(data=content[start : start + piece])
            self.send("stream", chunk, rid=envelope_id, answered=False)
        self.send("endstream", pb.EndStream(), rid=envelope_id, answered=False)
        reply = (await self._answers(envelope_id, 60))[-1]
        self._raise_on_error(reply)
        return decode(protocodec.unpack(reply.data, pb.UploadResponse))

    async def download(self, file_id: str = "", filename: str = "") -> tuple[dict[str, Any], bytes]:
        """Download a file by id (or name): its reply and its bytes."""
        request = pb.DownloadRequest(id=file_id, filename=filename)
        envelope_id = self.send("download", request)
        answers = await self._answers(envelope_id, 60)
        self._raise_on_error(answers[-1])
        content = b"".join(
            protocodec.unpack(e.data, pb.Stream).data for e in answers if e.command == "stream"
        )
        return decode(protocodec.unpack(answers[-1].data, pb.DownloadResponse)), content
