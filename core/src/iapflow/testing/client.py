"""A small async client for OpenFlow's JSON websocket protocol (tests, benchmarks, scripts)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
from collections.abc import Callable
from typing import Any

import websockets

_ids = itertools.count(1)


class ReplyError(Exception):
    """The server answered with an ``error`` message; ``str()`` is its ``message``."""

    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


class JsonClient:
    """Connects to ``url``, sends commands and collects replies and pushes.

    ``package_size`` splits outgoing ``data`` into pieces like OpenFlow clients do.
    """

    def __init__(self, url: str, package_size: int = 0, max_size: int | None = 2**26) -> None:
        self.url = url
        self.package_size = package_size
        self.max_size = max_size
        self.ws: Any = None
        self.pushes: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.jwt = ""
        self.user: dict[str, Any] = {}
        self._pending: dict[str, asyncio.Future[tuple[str, str]]] = {}
        self._chunks: dict[str, dict[int, str]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.on_push: Callable[[str, dict[str, Any], str], Any] | None = None
        """When set, called as ``on_push(command, data, push_id)`` for every push instead of
        queueing it in :attr:`pushes`; an awaitable result runs as a task. Reply to a push
        (a ``queuemessage`` must be answered before the server acknowledges it) with
        :meth:`answer`."""
        self._push_tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> JsonClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the websocket and start reading."""
        self.ws = await websockets.connect(self.url, max_size=self.max_size, compression=None)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        """Close the websocket."""
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                count, index = frame.get("count") or 1, frame.get("index") or 0
                data = frame.get("data") or ""
                if count > 1:
                    parts = self._chunks.setdefault(frame["id"], {})
                    parts[index] = data
                    if len(parts) < count:
                        continue
                    data = "".join(parts[i] for i in range(count))
                    del self._chunks[frame["id"]]
                replyto = frame.get("replyto")
                future = self._pending.pop(replyto, None) if replyto else None
                if future is not None and not future.done():
                    future.set_result((frame["command"], data))
                elif self.on_push is not None:
                    result = self.on_push(
                        frame["command"], json.loads(data) if data else {}, frame.get("id", "")
                    )
                    if inspect.isawaitable(result):
                        task = asyncio.ensure_future(result)
                        self._push_tasks.add(task)
                        task.add_done_callback(self._push_tasks.discard)
                else:
                    self.pushes.put_nowait((frame["command"], json.loads(data) if data else {}))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def send_frame(self, frame: dict[str, Any] | str) -> None:
        """Send one raw frame (a dict is JSON-encoded)."""
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def answer(self, push_id: str, command: str, data: Any = None) -> None:
        """Reply to the server's push ``push_id`` (``command`` ``error`` refuses a message)."""
        await self.send_frame(
            {
                "id": str(next(_ids)),
                "replyto": push_id,
                "command": command,
                "data": json.dumps(data if data is not None else {}),
            }
        )

    async def request(
        self, command: str, data: Any, message_id: str | None = None, wait: float = 30
    ) -> tuple[str, dict[str, Any]]:
        """Send ``command`` with ``data`` (a dict, or a raw string); return ``(command, data)``."""
        message_id = message_id or str(next(_ids))
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        text = data if isinstance(data, str) else json.dumps(data)
        size = self.package_size or len(text) or 1
        pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        for index, piece in enumerate(pieces):
            await self.send_frame(
                {
                    "id": message_id,
                    "command": command,
                    "data": piece,
                    "count": len(pieces),
                    "index": index,
                }
            )
        reply_command, reply_data = await asyncio.wait_for(future, wait)
        return reply_command, json.loads(reply_data) if reply_data else {}

    async def call(self, command: str, /, **data: Any) -> dict[str, Any]:
        """Send a command and return the reply data; raise :class:`ReplyError` on ``error``."""
        reply_command, reply = await self.request(command, data)
        if reply_command == "error":
            raise ReplyError(str(reply.get("message")), reply)
        return reply

    async def signin(self, username: str = "", password: str = "", **extra: Any) -> dict[str, Any]:
        """Sign in and remember the token and user."""
        if username:
            extra.update(username=username, password=password)
        reply = await self.call("signin", **extra)
        if not extra.get("validate_only"):
            self.jwt, self.user = reply["jwt"], reply["user"]
        return reply
