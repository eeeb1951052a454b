"""OpenFlow's JSON websocket protocol on ``/``, ``/ws`` and ``/ws/v1``.

Each text frame is ``{id, replyto, command, data, count, index}`` with ``data`` a JSON *string*.
Long messages travel in pieces sharing one ``id`` (``count`` pieces, ``index`` 0-based), both
ways. Replies carry ``replyto`` = request id; refusals are ``command: "error"`` with
``{"message", "error"}``. Bad frames get an error reply and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from iapflow import jsonutil
from iapflow.budget import BUSY
from iapflow.errors import ApiError
from iapflow.platform import Platform
from iapflow.session import Session

log = logging.getLogger("iapflow.jsonws")

_ID_IN_FRAME = re.compile(r'"id"\s*:\s*"([^"\\]{1,64})"')
_MAX_PENDING_MESSAGES = 32


class FrameError(Exception):
    """A frame that cannot be handled; ``replyto`` is the request id when it could be read."""

    def __init__(self, message: str, replyto: str | None = None) -> None:
        super().__init__(message)
        self.replyto = replyto


class _Chunks:
    """Pieces of one long message, until all ``count`` have arrived."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.parts: dict[int, str] = {}
        self.size = 0


class JsonConnection:
    """One websocket client speaking the JSON protocol."""

    def __init__(self, platform: Platform, websocket: WebSocket) -> None:
        self.platform = platform
        self.ws = websocket
        self.limits = platform.config.websocket
        client = websocket.client
        remote = {"remoteip": client.host if client else ""}
        self.session = Session(platform, self.push, self.close, remote, "json", ask=self.ask)
        # Pushes waiting for the client's reply (push id -> future), and the ids of arriving
        # messages that answer one of them (message id -> push id).
        self._awaiting: dict[str, asyncio.Future[tuple[str, str]]] = {}
        self._answers: dict[str, str] = {}
        self._send_lock = asyncio.Lock()
        self._message_ids = itertools.count(1)
        self._inflight = asyncio.Semaphore(self.limits.max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._chunks: dict[str, _Chunks] = {}
        self._buffered = 0
        self._closed = False

    # -- sending --------------------------------------------------------------------------------

    def _new_message_id(self) -> str:
        return f"{self.session.id}{next(self._message_ids):x}"

    async def send(
        self, command: str, data: Any, replyto: str | None = None, message_id: str = ""
    ) -> None:
        """Send a message, in pieces of ``package_size`` characters when it is long."""
        text = jsonutil.dumps(data)
        size = self.limits.package_size
        message_id = message_id or self._new_message_id()
        if len(text) <= size:
            # One frame: a single write needs no lock (pieces of other messages may interleave).
            await self._write(self._frame(message_id, replyto, command, text, 1, 0))
            return
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        async with self._send_lock:
            for index, piece in enumerate(pieces):
                await self._write(
                    self._frame(message_id, replyto, command, piece, len(pieces), index)
                )

    @staticmethod
    def _frame(
        message_id: str, replyto: str | None, command: str, piece: str, count: int, index: int
    ) -> str:
        return (
            f'{{"id":"{message_id}","replyto":{json.dumps(replyto)},"command":{json.dumps(command)},'
            f'"data":{json.dumps(piece, ensure_ascii=False)},"count":{count},"index":{index}}}'
        )

    async def _write(self, frame: str) -> None:
        if self._closed:
            return
        try:
            await self.ws.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True

    async def push(self, command: str, data: dict[str, Any]) -> None:
        """A server-initiated message (``refreshtoken``, later ``queuemessage``, ``watchevent``)."""
        await self.send(command, data)

    async def ask(self, command: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Push a message and wait for the client's reply frame (``replyto`` = the push's id).

        Returns the reply's command and data; raises ConnectionError if the socket closes first.
        """
        if self._closed:
            raise ConnectionError("connection closed")
        message_id = self._new_message_id()
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._awaiting[message_id] = future
        try:
            await self.send(command, data, message_id=message_id)
            if self._closed:
                raise ConnectionError("connection closed")
            reply_command, text = await future
        finally:
            self._awaiting.pop(message_id, None)
        try:
            reply = jsonutil.loads(text) if text else {}
        except ValueError:
            reply = {}
        return reply_command, reply if isinstance(reply, dict) else {"data": reply}

    def _answered(self, message_id: str, command: str, text: str) -> bool:
        """Hand a client's reply to a push to whoever waits for it; False for other messages."""
        push_id = self._answers.pop(message_id, None)
        future = self._awaiting.get(push_id) if push_id is not None else None
        if future is None:
            return False
        if not future.done():
            future.set_result((command, text))
        return True

    async def send_error(self, message: str, replyto: str | None) -> None:
        """An ``error`` reply carrying the reason in ``message`` and ``error``."""
        await self.send("error", {"message": message, "error": message}, replyto)

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.ws.close(code, reason[:120])

    # -- receiving ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes."""
        await self.ws.accept()
        await self.session.opened()
        timeout = asyncio.get_running_loop().create_task(self._signin_timeout())
        try:
            while not self._closed:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    await self.send_error(
                        "binary frames are not part of the JSON protocol; send text frames", None
                    )
                    continue
                try:
                    assembled = self._assemble(text)
                except FrameError as exc:
                    await self.send_error(str(exc), exc.replyto)
                    continue
                if assembled is not None and not self._answered(*assembled):
                    await self._inflight.acquire()
                    task = asyncio.get_running_loop().create_task(self._handle(*assembled))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except WebSocketDisconnect:
            pass
        finally:
            self._closed = True
            timeout.cancel()
            self._chunks.clear()
            self.platform.buffers.give(self._buffered)
            self._buffered = 0
            for task in list(self._tasks):
                task.cancel()
            for future in self._awaiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            await self.session.closed()

    async def _signin_timeout(self) -> None:
        await asyncio.sleep(self.limits.signin_timeout_seconds)
        if self.session.principal is None:
            log.info(
                "closing %s: no sign-in within %ss",
                self.session.remote,
                self.limits.signin_timeout_seconds,
            )
            await self.close(1008, "no sign-in within the sign-in timeout")

    def _message_limit(self) -> int:
        """How long a message may be: small until the connection signs in."""
        if self.session.principal is None:
            return self.limits.max_unsigned_message_bytes
        return self.limits.max_message_bytes

    def _assemble(self, text: str) -> tuple[str, str, str] | None:
        """Decode a frame; return ``(id, command, data)`` once a whole message is here."""
        if len(text) > self.limits.max_frame_bytes:
            found = _ID_IN_FRAME.search(text[:512])
            raise FrameError(
                f"frame of {len(text)} characters is over the limit of "
                f"{self.limits.max_frame_bytes}; send long messages in pieces (count/index)",
                found.group(1) if found else None,
            )
        if self.session.principal is None and len(text) > self._message_limit():
            found = _ID_IN_FRAME.search(text[:512])
            raise FrameError(
                f"frame of {len(text)} characters is over the limit of "
                f"{self._message_limit()} before sign-in; sign in first",
                found.group(1) if found else None,
            )
        try:
            frame = jsonutil.loads(text)
        except ValueError:
            raise FrameError("frame is not JSON: expected {id, command, data}") from None
        if not isinstance(frame, dict):
            raise FrameError("frame must be a JSON object {id, command, data}")
        raw_id = frame.get("id")
        message_id = (
            str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else ""
        )
        replyto = message_id or None
        if len(message_id) > 128:
            raise FrameError("id is longer than 128 characters")
        answers = frame.get("replyto")
        if isinstance(answers, str) and answers in self._awaiting:
            self._answers[message_id] = answers
        command = frame.get("command")
        if not isinstance(command, str) or not command:
            raise FrameError("frame has no command", replyto)
        data = frame.get("data", "")
        if data is None:
            data = ""
        if not isinstance(data, str):
            raise FrameError("data must be a JSON string (the message object, serialised)", replyto)
        count, index = frame.get("count", 1), frame.get("index", 0)
        if count in (None, 1) or count == 0:
            return message_id, command, data
        return self._add_chunk(message_id, command, data, count, index)

    def _add_chunk(
        self, message_id: str, command: str, data: str, count: Any, index: Any
    ) -> tuple[str, str, str] | None:
        replyto = message_id or None
        limit = self._message_limit()
        max_count = limit // 100 + 1
        if (
            not isinstance(count, int)
            or not isinstance(index, int)
            or not 0 <= index < count <= max_count
        ):
            raise FrameError(f"bad count/index {count!r}/{index!r}", replyto)
        if not message_id:
            raise FrameError("a message in pieces needs an id", None)
        chunks = self._chunks.get(message_id)
        if chunks is None:
            if len(self._chunks) >= _MAX_PENDING_MESSAGES:
                raise FrameError(
                    "too many unfinished messages in pieces on this connection", replyto
                )
            chunks = self._chunks[message_id] = _Chunks(count)
        if chunks.count != count:
            self._drop(message_id)
            raise FrameError("pieces of one message disagree on count", replyto)
        if index not in chunks.parts:
            if self._buffered + len(data) > limit:
                self._drop(message_id)
                what = "before sign-in " if self.session.principal is None else ""
                raise FrameError(
                    f"message is over the limit of {limit} characters {what}(with the other "
                    "unfinished messages of this connection)",
                    replyto,
                )
            if not self.platform.buffers.take(len(data)):
                self._drop(message_id)
                raise FrameError(BUSY, replyto)
            chunks.parts[index] = data
            chunks.size += len(data)
            self._buffered += len(data)
        if len(chunks.parts) < count:
            return None
        self._drop(message_id)
        return message_id, command, "".join(chunks.parts[i] for i in range(count))

    def _drop(self, message_id: str) -> None:
        """Forget an unfinished message and give its bytes back to the budget."""
        chunks = self._chunks.pop(message_id, None)
        if chunks is not None:
            self._buffered -= chunks.size
            self.platform.buffers.give(chunks.size)

    async def _handle(self, message_id: str, command: str, text: str) -> None:
        replyto = message_id or None
        try:
            if command in ("pong", "refreshtoken", "watchevent"):
                return  # answers to our pings and pushes
            if command == "ping":
                await self.send("pong", {}, replyto)
                return
            try:
                data = jsonutil.loads(text) if text else {}
            except ValueError:
                await self.send_error("data is not valid JSON", replyto)
                return
            if not isinstance(data, dict):
                await self.send_error("data must hold a JSON object", replyto)
                return
            try:
                reply = await self.platform.dispatcher.dispatch(command, data, self.session)
            except ApiError as exc:
                await self.send_error(str(exc), replyto)
                return
            except Exception:
                log.exception("command %s failed", command)
                await self.send_error(
                    f"internal error in {command[:64]}; the server logged it", replyto
                )
                return
            await self.send(command, reply, replyto)
        finally:
            self._inflight.release()


async def endpoint(websocket: WebSocket) -> None:
    """The Starlette websocket endpoint for the JSON protocol: serve one client."""
    platform: Platform = websocket.app.state.platform
    await JsonConnection(platform, websocket).run()
