"""The storage contract's change stream on MongoDB: one database-level stream.

Opened with ``fullDocument: "updateLookup"`` (inserts, updates and replaces carry the document)
and ``fullDocumentBeforeChange: "whenAvailable"`` (updates, replaces and deletes carry the
document before the change in collections created or modified with
``changeStreamPreAndPostImages: {enabled: true}``; elsewhere the field is ``None``). A store
too old for pre-images (MongoDB before 6.0) is asked without them.

A given resume token is passed as ``startAfter``, which also continues after an
``invalidate`` event. An ``invalidate`` (the database was dropped or renamed) is not passed
on: the stream reopens after it by itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo import errors as mongo_errors

from iapflow.contracts.storage import ChangeStream, Document, ResumeTokenLost
from iapflow.errors import StorageError

# Server error codes for "the resume point is no longer in the oplog".
_HISTORY_LOST = frozenset({136, 280, 286})
_MAX_AWAIT_MS = 1000


def _failure(exc: mongo_errors.PyMongoError) -> StorageError:
    if isinstance(exc, mongo_errors.OperationFailure) and exc.code in _HISTORY_LOST:
        return ResumeTokenLost(f"change stream history lost: {_reason(exc)}")
    if isinstance(exc, mongo_errors.ConnectionFailure | mongo_errors.ServerSelectionTimeoutError):
        return StorageError(f"storage unavailable: {exc.__class__.__name__}")
    return StorageError(f"change stream failed: {_reason(exc)}")


def _reason(exc: mongo_errors.PyMongoError) -> str:
    details = getattr(exc, "details", None) or {}
    return str(details.get("errmsg") or exc).split(", full error:")[0][:300]


class MongoChangeStream(ChangeStream):
    """A database-level pymongo change stream behind the :class:`ChangeStream` contract."""

    def __init__(self, db: Any, resume_after: Any | None) -> None:
        self._db = db
        self._token = resume_after
        self._stream: Any = None
        self._pre_images = True
        self._closed = False

    async def open(self) -> None:
        """Open the server-side cursor (StorageError, or ResumeTokenLost, when it cannot)."""
        options: dict[str, Any] = {
            # File bytes (GridFS chunks, 255 kB each) are never watched: keep them off the wire.
            "pipeline": [{"$match": {"ns.coll": {"$not": {"$regex": r"\.chunks$"}}}}],
            "full_document": "updateLookup",
            "max_await_time_ms": _MAX_AWAIT_MS,
        }
        if self._token is not None:
            options["start_after"] = self._token
        try:
            try:
                self._stream = await self._db.watch(
                    full_document_before_change="whenAvailable" if self._pre_images else None,
                    **options,
                )
            except mongo_errors.OperationFailure as exc:
                if not self._pre_images or "fullDocumentBeforeChange" not in str(exc):
                    raise
                self._pre_images = False  # MongoDB < 6.0: no pre-images at all
                self._stream = await self._db.watch(**options)
        except mongo_errors.PyMongoError as exc:
            raise _failure(exc) from exc
        self._token = self._stream.resume_token or self._token

    @property
    def resume_token(self) -> Any:
        """See :attr:`iapflow.contracts.storage.ChangeStream.resume_token`."""
        if self._stream is not None:
            return self._stream.resume_token or self._token
        return self._token

    async def __anext__(self) -> Document:
        """See :meth:`iapflow.contracts.storage.ChangeStream.__anext__`."""
        while True:
            if self._closed or self._stream is None:
                raise StopAsyncIteration
            try:
                event: Document = await self._stream.next()
            except StopAsyncIteration:
                # The cursor died without an error (it was killed on the server): reopen.
                await self._reopen(self.resume_token)
                continue
            except mongo_errors.PyMongoError as exc:
                raise _failure(exc) from exc
            if event.get("operationType") == "invalidate":
                await self._reopen(event["_id"])
                continue
            self._token = event["_id"]
            return event

    async def _reopen(self, token: Any) -> None:
        await self._close_cursor()
        self._token = token
        await self.open()

    async def _close_cursor(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(mongo_errors.PyMongoError):  # the connection may be gone
                await stream.close()

    async def close(self) -> None:
        """See :meth:`iapflow.contracts.storage.ChangeStream.close`."""
        self._closed = True
        token = self.resume_token
        await self._close_cursor()
        self._token = token


async def open_change_stream(db: Any, resume_after: Any | None) -> MongoChangeStream:
    """An open :class:`MongoChangeStream` on ``db``, continuing after ``resume_after``."""
    stream = MongoChangeStream(db, resume_after)
    await stream.open()
    return stream
