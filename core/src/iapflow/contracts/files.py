"""The file store contract: what a storage backend's file store implements (GridFS-like).

A file is a document in the store's files collection (``fs.files`` for the mongo backend) plus
its bytes, kept apart in chunks. The document has ``_id``, ``filename``, ``contentType``,
``length``, ``chunkSize``, ``uploadDate`` and ``metadata``; iapflow keeps the file's ACL in
``metadata._acl``. Bytes move as async iterators of ``bytes`` both ways, so no file has to be
held in memory whole.

A file store knows nothing of users or rights: :mod:`iapflow.builtin.files.service` is the only
caller and
adds the ACL, the way :mod:`iapflow.secure.layer` does for documents. Backends map their driver's
errors to :class:`iapflow.errors.StorageError` (and, for filters the store refuses,
:class:`~iapflow.errors.InvalidQuery`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iapflow.contracts.storage import Document, Filter

FILES_COLLECTION = "fs.files"
"""The collection holding the file documents; the document commands may read it, not write it."""


@dataclass
class FileDownload:
    """An opened file: its stored document and an iterator over its bytes, in order.

    Iterate ``chunks`` at most once. Call :meth:`close` when stopping early (``async with``
    does it), so that the store can release its cursor.
    """

    document: Document
    chunks: AsyncIterator[bytes]

    async def close(self) -> None:
        """Stop reading and release the store's resources (safe to call twice)."""
        closer = getattr(self.chunks, "aclose", None)
        if closer is not None:
            await closer()

    async def __aenter__(self) -> FileDownload:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class FileStore(ABC):
    """Files as a document plus streamed bytes."""

    async def ensure_indexes(self) -> None:  # noqa: B027 - optional, a no-op by default
        """Create the indexes the store itself needs (idempotent); called at startup."""

    @abstractmethod
    async def upload(
        self,
        chunks: AsyncIterable[bytes],
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, Any],
        file_id: str | None = None,
    ) -> Document:
        """Store the bytes ``chunks`` yields as one file and return its stored document.

        Pieces of any size are accepted; the store cuts them into its own chunks and holds at
        most a few of them in memory. The document is written after the last chunk, so a file
        is never visible half-written. When ``chunks`` raises (a size limit, a client that went
        away) or the store fails, the chunks written so far are removed and the exception
        propagates. ``file_id`` defaults to a new id (a 24-hex-digit string).
        """

    @abstractmethod
    async def open(self, file_id: Any) -> FileDownload | None:
        """Open the file with ``_id`` ``file_id`` for reading, or ``None`` when there is none."""

    @abstractmethod
    async def find(
        self,
        filter: Filter,
        *,
        sort: Sequence[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[Document]:
        """File documents matching ``filter`` (a MongoDB filter on the files collection)."""

    @abstractmethod
    async def update_metadata(self, file_id: Any, metadata: Mapping[str, Any]) -> Document | None:
        """Replace the ``metadata`` of file ``file_id``; return the document after, or ``None``
        when there is no such file. Name, length, type and bytes stay as they are."""

    @abstractmethod
    async def delete(self, file_id: Any) -> bool:
        """Delete the file document and its chunks; ``False`` when there was no such file."""
