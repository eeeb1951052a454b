"""One client connection speaking the OpenIAP protobuf protocol, whatever carries the envelopes.

:class:`ProtoConnection` turns incoming ``Envelope`` messages into dispatcher calls and encodes
replies (``<command>reply``, ``pong``, ``getelement``, ``error``) and pushes (``queueevent``,
``watchevent``, ``refreshtoken``, ``ping``; empty ``rid``). It also runs file streaming
(``download`` and ``upload`` with ``beginstream``/``stream``/``endstream``). The websocket and
gRPC transports subclass it and only move envelopes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
from typing import Any

from google.protobuf.message import Message

from iapflow import jsonutil
from iapflow.budget import BUSY
from iapflow.builtin.files.config import FilesConfig
from iapflow.builtin.proto import codec as protocodec
from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.builtin.proto.codec import table_for
from iapflow.errors import ApiError, NotSignedIn
from iapflow.platform import Platform
from iapflow.session import Session

log = logging.getLogger("iapflow.proto")

STREAM_CHUNK_BYTES = 1024 * 1024
_MAX_UPLOADS = 8
# Envelopes a client sends that answer or accompany something and need no reply.
_IGNORED = frozenset({"pong", "queueevent", "watchevent", "refreshtoken", "queuemessagereply"})


class _Upload:
    """An ``upload`` whose chunks are still arriving."""

    def __init__(self, request: pb.UploadRequest) -> None:
        self.request = request
        self.parts: list[bytes] = []
        self.size = 0


class ProtoConnection:
    """Protocol logic shared by ``/ws/v2`` and gRPC; subclasses implement :meth:`write`."""

    protocol = "proto"

    def __init__(self, platform: Platform, remote: dict[str, str]) -> None:
        self.platform = platform
        self.table = table_for(platform)
        self.session = Session(platform, self.push, self.close, remote, self.protocol, ask=self.ask)
        self.closed = False
        self._seq = itertools.count(0)
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self._inflight = asyncio.Semaphore(platform.config.websocket.max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._uploads: dict[str, _Upload] = {}

    # -- to implement -------------------------------------------------------------------------

    async def write(self, envelope: pb.Envelope) -> None:
        """Put one envelope on the wire (called with the send lock held, in ``seq`` order)."""
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        """Close the connection."""
        raise NotImplementedError

    # -- sending ------------------------------------------------------------------------------

    async def send(self, command: str, msg: Message | None, rid: str = "") -> None:
        """Send an envelope; ``seq`` counts up from 0 per connection."""
        if self.closed:
            return
        envelope = pb.Envelope(command=command, rid=rid, id=f"{next(self._ids)}")
        if msg is not None:
            envelope.data.CopyFrom(protocodec.pack(msg))
        async with self._send_lock:
            envelope.seq = next(self._seq)
            try:
                await self.write(envelope)
            except Exception as exc:  # a dead socket or stream: stop sending
                log.debug("send on %s failed: %s", self.session.id, exc)
                self.closed = True

    async def send_error(self, message: str, rid: str) -> None:
        """An ``error`` envelope answering request ``rid``."""
        await self.send("error", pb.ErrorResponse(message=message), rid)

    async def push(self, command: str, data: dict[str, Any]) -> None:
        """A server push (queue delivery, watch event, token refresh) with an empty ``rid``."""
        found = self.table.push_message(command, data)
        if found is None:
            log.debug("no proto push for %s; dropped", command)
            return
        await self.send(*found)

    async def ask(self, command: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Proto clients never answer pushes: send it and report it delivered."""
        if self.closed:
            raise ConnectionError("connection closed")
        await self.push(command, data)
        if self.closed:
            raise ConnectionError("connection closed")
        return command, {}

    # -- receiving ----------------------------------------------------------------------------

    async def opened(self) -> None:
        """Register the session and greet with a ``ping``, as OpenFlow does."""
        await self.session.opened()
        await self.send("ping", None)

    async def received(self, envelope: pb.Envelope) -> None:
        """Handle one envelope: stream pieces in order, requests as concurrent tasks."""
        command = envelope.command
        if command in _IGNORED:
            return
        if command in ("beginstream", "stream", "endstream"):
            await self._stream_piece(envelope)
            return
        if command == "upload":
            await self._start_upload(envelope)
            return
        await self._inflight.acquire()
        task = asyncio.get_running_loop().create_task(self._handle(envelope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finished(self) -> None:
        """Release the session once the connection is gone."""
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for upload in self._uploads.values():
            self.platform.buffers.give(upload.size)
        self._uploads.clear()
        await self.session.closed()

    async def _handle(self, envelope: pb.Envelope) -> None:
        rid = envelope.id
        command = envelope.command
        try:
            if command == "ping":
                await self.send("pong", pb.PingResponse(), rid)
            elif command == "getelement":
                request = protocodec.unpack(envelope.data, pb.GetElementRequest)
                await self.send("getelement", pb.GetElementResponse(xpath=request.xpath), rid)
            elif command == "download":
                await self._download(envelope)
            else:
                await self._dispatch(envelope)
        except ApiError as exc:
            await self.send_error(str(exc), rid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("proto command %s failed", command[:64])
            await self.send_error(f"internal error in {command[:64]}; the server logged it", rid)
        finally:
            self._inflight.release()

    async def _call(
        self, command: str, data: dict[str, Any], jwt: str, authenticates: bool = False
    ) -> dict[str, Any]:
        if jwt and not authenticates:
            data["jwt"] = jwt  # the envelope's token is the caller's identity
        return await self.platform.dispatcher.dispatch(command, data, self.session)

    async def _dispatch(self, envelope: pb.Envelope) -> None:
        spec = self.table.commands.get(envelope.command)
        if spec is None:
            raise ApiError(f"Unknown command {envelope.command[:64]!r}")
        data = protocodec.request_dict(spec, envelope.data)
        reply = await self._call(spec.internal, data, envelope.jwt, spec.authenticates)
        await self.send(
            f"{envelope.command}reply", protocodec.response_message(spec, reply), envelope.id
        )

    # -- files --------------------------------------------------------------------------------

    async def _download(self, envelope: pb.Envelope) -> None:
        request = protocodec.unpack(envelope.data, pb.DownloadRequest)
        assert isinstance(request, pb.DownloadRequest)
        query: dict[str, Any] = {"id": request.id} if request.id else {"filename": request.filename}
        if not request.id and not request.filename:
            raise ApiError("download needs an id or a filename")
        reply = await self._call("getfile", query, envelope.jwt)
        content = base64.b64decode(reply.get("file") or "")
        file_id = str(reply.get("id") or request.id)
        found = await self._call(
            "query",
            {"collectionname": "fs.files", "query": {"_id": file_id}, "top": 1,
             "projection": {"filename": 1}},
            envelope.jwt,
        )  # fmt: skip
        documents = found.get("result") or []
        filename = documents[0].get("filename") if documents else request.filename
        rid = envelope.id
        await self.send("beginstream", pb.BeginStream(), rid)
        for start in range(0, len(content), STREAM_CHUNK_BYTES):
            await self.send(
                "stream", pb.Stream(data=content[start : start + STREAM_CHUNK_BYTES]), rid
            )
        await self.send("endstream", pb.EndStream(), rid)
        response = pb.DownloadResponse(
            id=file_id, filename=str(filename or ""), mimetype=str(reply.get("mimeType") or "")
        )
        await self.send("downloadreply", response, rid)

    async def _start_upload(self, envelope: pb.Envelope) -> None:
        """Accept an upload's pieces only from a signed-in caller: the connection's user, or
        a valid token in the envelope."""
        try:
            request = protocodec.unpack(envelope.data, pb.UploadRequest)
            if self.session.principal is None:
                if not envelope.jwt:
                    raise NotSignedIn("upload: sign in first (or send a jwt with the upload)")
                await self.platform.auth.principal_from_token(envelope.jwt)
        except ApiError as exc:
            self._later(self.send_error(str(exc), envelope.id))
            return
        assert isinstance(request, pb.UploadRequest)
        if len(self._uploads) >= _MAX_UPLOADS:
            self._later(self.send_error("too many uploads at once on this connection", envelope.id))
            return
        self._uploads[envelope.id] = _Upload(request)

    async def _drop_upload(self, rid: str, message: str) -> None:
        upload = self._uploads.pop(rid, None)
        if upload is not None:
            self.platform.buffers.give(upload.size)
        await self.send_error(message, rid)

    async def _stream_piece(self, envelope: pb.Envelope) -> None:
        upload = self._uploads.get(envelope.rid)
        if upload is None:
            return  # a piece of an upload that was refused or never started
        if envelope.command == "stream":
            piece = protocodec.unpack(envelope.data, pb.Stream)
            assert isinstance(piece, pb.Stream)
            limit = self.platform.config.section(FilesConfig).max_file_bytes
            if upload.size + len(piece.data) > limit:
                await self._drop_upload(envelope.rid, f"file is over the limit of {limit} bytes")
                return
            if not self.platform.buffers.take(len(piece.data)):
                await self._drop_upload(envelope.rid, BUSY)
                return
            upload.parts.append(piece.data)
            upload.size += len(piece.data)
        elif envelope.command == "endstream":
            del self._uploads[envelope.rid]
            await self._inflight.acquire()
            self._later(self._finish_upload(envelope, upload), release=True)

    async def _finish_upload(self, envelope: pb.Envelope, upload: _Upload) -> None:
        request = upload.request
        content = b"".join(upload.parts)
        upload.parts.clear()
        self.platform.buffers.give(upload.size)
        data: dict[str, Any] = {
            "filename": request.filename,
            "mimetype": request.mimetype or None,
            "file": base64.b64encode(content).decode("ascii"),
        }
        if request.metadata:
            data["metadata"] = jsonutil.maybe_json(request.metadata)
        try:
            reply = await self._call("savefile", data, envelope.jwt)
        except ApiError as exc:
            await self.send_error(str(exc), envelope.rid)
            return
        response = pb.UploadResponse(
            id=str(reply.get("id") or ""), filename=request.filename, bytes=len(content),
            chunks=len(upload.parts), mb=len(content) / 1024 / 1024,
        )  # fmt: skip
        await self.send("uploadreply", response, envelope.rid)

    def _later(self, work: Any, release: bool = False) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("proto upload failed")
            finally:
                if release:
                    self._inflight.release()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
