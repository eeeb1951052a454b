"""The OpenIAP protobuf protocol on websocket ``/ws/v2``.

Input is a byte stream across binary messages: ``[u32 little-endian length][Envelope]`` repeated
(pyapi and nodeapi send length and envelope as two messages, the Rust client as one). Output is
two binary messages per envelope, the 4-byte length and then the envelope, which is what the
Python client 0.0.37 can read. A length over the limit cannot be skipped safely, so it closes
the connection (code 1009); bytes that are not an Envelope get an ``error`` envelope.
"""

from __future__ import annotations

import contextlib
import logging
import struct

from google.protobuf.message import DecodeError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from iapflow.budget import BUSY
from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.builtin.proto.connection import ProtoConnection
from iapflow.platform import Platform

log = logging.getLogger("iapflow.protows")

PATH = "/ws/v2"
_LENGTH = struct.Struct("<I")


class ProtoWebsocketConnection(ProtoConnection):
    """One ``/ws/v2`` client."""

    protocol = "proto-ws"

    def __init__(self, platform: Platform, websocket: WebSocket) -> None:
        client = websocket.client
        super().__init__(platform, {"remoteip": client.host if client else ""})
        self.ws = websocket
        self.max_envelope = platform.config.websocket.max_message_bytes
        self._buffer = bytearray()
        self._reserved = 0  # budget bytes held for the envelope being received

    async def write(self, envelope: pb.Envelope) -> None:
        """Length and envelope as two binary messages."""
        payload = envelope.SerializeToString()
        await self.ws.send_bytes(_LENGTH.pack(len(payload)))
        await self.ws.send_bytes(payload)

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.ws.close(code, reason[:120])

    async def run(self) -> None:
        """Serve the connection until it closes."""
        await self.ws.accept()
        await self.opened()
        try:
            while not self.closed:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                chunk = message.get("bytes")
                if chunk is None:
                    await self.send_error(
                        "text frames are not part of the protobuf protocol; send binary frames", ""
                    )
                    continue
                self._buffer += chunk
                await self._drain()
        except WebSocketDisconnect:
            pass
        finally:
            self.platform.buffers.give(self._reserved)
            self._reserved = 0
            await self.finished()

    async def _drain(self) -> None:
        while len(self._buffer) >= _LENGTH.size and not self.closed:
            (length,) = _LENGTH.unpack_from(self._buffer)
            signed_in = self.session.principal is not None
            limit = (
                self.max_envelope
                if signed_in
                else self.platform.config.websocket.max_unsigned_message_bytes
            )
            if length > limit:
                log.info("closing %s: envelope length %d over the limit", self.session.id, length)
                when = "" if signed_in else " before sign-in; sign in first"
                await self.send_error(
                    f"envelope length {length} is over the limit of {limit} bytes{when}", ""
                )
                await self.close(1009, "envelope length over the limit")
                return
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                # Hold the whole envelope's bytes against the server-wide budget while it
                # arrives; an envelope cannot be skipped half-way, so a refusal closes.
                if not self._reserved:
                    if not self.platform.buffers.take(length):
                        await self.send_error(BUSY, "")
                        await self.close(1013, "server busy: too many unfinished messages")
                        return
                    self._reserved = length
                return
            payload = bytes(self._buffer[_LENGTH.size : end])
            del self._buffer[:end]
            self.platform.buffers.give(self._reserved)
            self._reserved = 0
            envelope = pb.Envelope()
            try:
                envelope.ParseFromString(payload)
            except DecodeError:
                await self.send_error("message is not an openiap.Envelope", "")
                continue
            await self.received(envelope)


async def endpoint(websocket: WebSocket) -> None:
    """The Starlette websocket endpoint for ``/ws/v2``."""
    platform: Platform = websocket.app.state.platform
    await ProtoWebsocketConnection(platform, websocket).run()
