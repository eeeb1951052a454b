"""The OpenIAP protobuf protocol over gRPC: ``openiap.FlowService/SetupStream`` on its own port.

One ``SetupStream`` call is one connection (sign-in, queues and watches belong to it); envelopes
flow both ways as on ``/ws/v2`` without a length prefix. Response headers go out as soon as the
call opens, because the Rust client waits for them before it sends anything. Incoming messages
are parsed here rather than by grpc, so bytes that are not an Envelope get an ``error`` envelope
and the stream stays open (grpc would end the call); a message over ``[grpc]
max_message_bytes`` ends the call with ``RESOURCE_EXHAUSTED``, which grpc does itself. The
other RPCs of the upstream schema are not served (no official client calls them), as in
OpenFlow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.builtin.proto.config import GrpcConfig
from iapflow.builtin.proto.connection import ProtoConnection
from iapflow.errors import StartupError
from iapflow.platform import Platform

log = logging.getLogger("iapflow.grpc")

SERVICE = "openiap.FlowService"
_DONE = object()


class GrpcConnection(ProtoConnection):
    """One ``SetupStream`` call."""

    protocol = "grpc"

    def __init__(self, platform: Platform, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        super().__init__(platform, {"remoteip": _peer_ip(context.peer())})
        self.context = context
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()

    async def write(self, envelope: pb.Envelope) -> None:
        """Queue the envelope for the response stream."""
        self.outbox.put_nowait(envelope)

    async def close(self, code: int, reason: str) -> None:
        """End the response stream."""
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(_DONE)

    async def serve(self, requests: AsyncIterator[bytes]) -> AsyncIterator[pb.Envelope]:
        """Read requests in a task while yielding replies and pushes."""
        await self.context.send_initial_metadata(())
        await self.opened()
        reader = asyncio.get_running_loop().create_task(self._read(requests))
        try:
            while True:
                item = await self.outbox.get()
                if item is _DONE:
                    break
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self.finished()

    async def _read(self, requests: AsyncIterator[bytes]) -> None:
        try:
            async for message in requests:
                envelope = pb.Envelope()
                try:
                    envelope.ParseFromString(message)
                except DecodeError:
                    await self.send_error("message is not an openiap.Envelope", "")
                    continue
                await self.received(envelope)
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        except Exception:
            log.exception("reading a gRPC stream failed")
        finally:
            await self.close(1000, "client finished")


def _peer_ip(peer: str) -> str:
    # "ipv4:127.0.0.1:5000" / "ipv6:[::1]:5000"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


class GrpcServer:
    """The gRPC server of one platform, started and stopped with it."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        """Listen on ``[grpc] port`` of ``[server] host``."""
        config = self.platform.config.section(GrpcConfig)
        limit = config.max_message_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.http2.max_ping_strikes", 0),
                # gRPC sets SO_REUSEPORT by default, which lets a second process (another
                # server, another local user) bind the same port and take half the clients.
                ("grpc.so_reuseport", 0),
            ]
        )

        async def setup_stream(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[pb.Envelope]:
            async for envelope in GrpcConnection(self.platform, context).serve(requests):
                yield envelope

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "SetupStream": grpc.stream_stream_rpc_method_handler(
                    setup_stream,
                    request_deserializer=None,  # raw bytes: parsed in GrpcConnection._read
                    response_serializer=pb.Envelope.SerializeToString,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        address = f"{self.platform.config.server.host}:{config.port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:
            self.server = None
            raise StartupError(
                f"gRPC port {config.port} on {self.platform.config.server.host} is in use by "
                "another process: stop it, or set [grpc] port (0 turns gRPC off)"
            ) from None
        await self.server.start()
        log.info("gRPC %s listening on %s", SERVICE, address)

    async def stop(self) -> None:
        """Stop at once; open streams end."""
        if self.server is not None:
            await self.server.stop(grace=1)
            self.server = None
