"""A small client for the protobuf protocol on websocket ``/ws/v2``, for tests of commands
and their :class:`iapflow.dispatch.Proto` mappings (a plugin's own messages included): it
sends an Envelope with any message and decodes the reply as the message class given."""

from __future__ import annotations

import asyncio
import struct
from typing import Any, TypeVar

import websockets
from google.protobuf.message import Message

from iapflow.builtin.proto import openiap_pb2 as pb

M = TypeVar("M", bound=Message)


class ProtoError(Exception):
    """An ``error`` envelope's message."""


class ProtoWs:
    """A /ws/v2 client: one request at a time; pushes (empty ``rid``) are kept in ``pushes``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None
        self.ids = 0
        self.pushes: list[pb.Envelope] = []

    async def __aenter__(self) -> ProtoWs:
        self.ws = await websockets.connect(self.url, max_size=2**26)
        greeting = await self.next()
        assert greeting.command == "ping"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def next(self) -> pb.Envelope:
        """The next envelope from the server (a length message, then the envelope)."""
        length = struct.unpack("<I", await asyncio.wait_for(self.ws.recv(), 15))[0]
        payload = b""
        while len(payload) < length:
            payload += await asyncio.wait_for(self.ws.recv(), 15)
        envelope = pb.Envelope()
        envelope.ParseFromString(payload)
        return envelope

    async def call(self, command: str, msg: Message, reply: type[M], jwt: str = "") -> M:
        """Send ``command`` and decode its ``<command>reply`` as ``reply``."""
        self.ids += 1
        envelope = pb.Envelope(command=command, id=f"r{self.ids}", jwt=jwt)
        envelope.data.Pack(msg)
        payload = envelope.SerializeToString()
        await self.ws.send(struct.pack("<I", len(payload)) + payload)
        while True:
            answer = await self.next()
            if answer.rid != envelope.id:
                self.pushes.append(answer)
                continue
            if answer.command == "error":
                error = pb.ErrorResponse()
                answer.data.Unpack(error)
                raise ProtoError(error.message)
            assert answer.command == f"{command}reply", answer.command
            decoded: M = reply()
            assert answer.data.Unpack(decoded), answer.data.type_url
            return decoded

    async def signin(self, username: str = "admin", password: str = "admin") -> pb.User:
        reply = await self.call(
            "signin", pb.SigninRequest(username=username, password=password), pb.SigninResponse
        )
        return reply.user
