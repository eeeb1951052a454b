"""MongoFileStore: iapflow's file store contract on GridFS (bucket ``fs``).

Files are stored in the GridFS layout (``fs.files`` documents, ``fs.chunks`` with
``{files_id, n, data}``), so pymongo's :class:`gridfs.AsyncGridFSBucket`, the Node.js driver and
therefore OpenFlow read what iapflow writes, and the other way round. The bucket does the deletes
and creates the GridFS indexes. Bytes are written and read here, chunk by chunk, because the
bucket's own streams buffer too much for a server that must not hold whole files in memory:
``GridIn`` keeps up to 48 MB of chunks before its first write, and a ``GridOut`` cursor fetches
batches of up to 16 MB.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any

from bson import Int64
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING, ReturnDocument

from iapflow.contracts.files import FileDownload, FileStore
from iapflow.contracts.storage import Document, Filter
from iapflow.errors import StorageError
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow_mongo.storage import _expand_id_lists, _objectid_variant, map_pymongo_errors

log = logging.getLogger("iapflow_mongo.files")

DEFAULT_CHUNK_BYTES = 255 * 1024
"""GridFS's default chunk size (the drivers' and OpenFlow's)."""
BATCH_BYTES = 1024 * 1024
"""About how many bytes of chunks travel in one insert or one cursor batch."""


class MongoFileStore(FileStore):
    """GridFS bucket ``bucket_name`` of database ``db`` (a pymongo ``AsyncDatabase``)."""

    def __init__(
        self,
        db: Any,
        bucket_name: str = "fs",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.db = db
        self.bucket = AsyncGridFSBucket(db, bucket_name, chunk_size_bytes=chunk_bytes)
        self.files = db[f"{bucket_name}.files"]
        self.chunks = db[f"{bucket_name}.chunks"]
        self.chunk_bytes = chunk_bytes
        self._batch_chunks = max(1, batch_bytes // chunk_bytes)
        self._indexes_ensured = False

    async def ensure_indexes(self) -> None:
        """The GridFS indexes: ``files {filename, uploadDate}``, unique ``chunks {files_id, n}``."""
        if self._indexes_ensured:
            return
        with map_pymongo_errors():
            await self.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
            await self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        self._indexes_ensured = True

    # -- writing --------------------------------------------------------------------------------

    async def upload(
        self,
        chunks: AsyncIterable[bytes],
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, Any],
        file_id: str | None = None,
    ) -> Document:
        """See :meth:`iapflow.contracts.files.FileStore.upload`."""
        await self.ensure_indexes()
        fid = file_id or new_id()
        writer = _ChunkWriter(self.chunks, fid, self.chunk_bytes, self._batch_chunks)
        try:
            async for piece in chunks:
                await writer.write(piece)
            length = await writer.finish()
            document: Document = {
                "_id": fid,
                "length": Int64(length),
                "chunkSize": self.chunk_bytes,
                "uploadDate": utcnow(),
                "filename": filename,
                "contentType": content_type,
                "metadata": dict(metadata),
            }
            with map_pymongo_errors():
                await self.files.insert_one(document)
        except BaseException:
            if writer.written:
                try:
                    await self.chunks.delete_many({"files_id": fid})
                except Exception:
                    log.warning("could not remove the chunks of failed upload %s", fid)
            raise
        return document

    async def update_metadata(self, file_id: Any, metadata: Mapping[str, Any]) -> Document | None:
        """See :meth:`iapflow.contracts.files.FileStore.update_metadata`."""

        async def run(query: Filter) -> Document | None:
            doc: Document | None = await self.files.find_one_and_update(
                query, {"$set": {"metadata": dict(metadata)}}, return_document=ReturnDocument.AFTER
            )
            return doc

        with map_pymongo_errors():
            updated: Document | None = await self._by_id(run, {"_id": file_id})
            return updated

    async def delete(self, file_id: Any) -> bool:
        """See :meth:`iapflow.contracts.files.FileStore.delete`."""
        found = await self._find_one({"_id": file_id})
        if found is None:
            return False
        with map_pymongo_errors():
            try:
                await self.bucket.delete(found["_id"])
            except NoFile:
                return False
        return True

    # -- reading --------------------------------------------------------------------------------

    async def find(
        self,
        filter: Filter,
        *,
        sort: Sequence[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[Document]:
        """See :meth:`iapflow.contracts.files.FileStore.find`."""

        async def run(query: Filter) -> list[Document]:
            cursor = self.files.find(query, skip=skip, limit=limit)
            if sort:
                cursor = cursor.sort(list(sort))
            return [doc async for doc in cursor]

        with map_pymongo_errors():
            found: list[Document] = await self._by_id(run, filter)
            return found

    async def open(self, file_id: Any) -> FileDownload | None:
        """See :meth:`iapflow.contracts.files.FileStore.open`."""
        document = await self._find_one({"_id": file_id})
        if document is None:
            return None
        return FileDownload(document, self._read_chunks(document))

    async def _find_one(self, filter: Filter) -> Document | None:
        with map_pymongo_errors():
            doc: Document | None = await self._by_id(self.files.find_one, filter)
            return doc

    async def _read_chunks(self, document: Document) -> AsyncIterator[bytes]:
        """The file's chunks in order, checked against its length as the GridFS spec says."""
        length = int(document.get("length") or 0)
        chunk_bytes = int(document.get("chunkSize") or self.chunk_bytes)
        if length == 0:
            return
        expected_chunks = -(-length // chunk_bytes)
        batch = max(1, self._batch_chunks * self.chunk_bytes // chunk_bytes)
        cursor = self.chunks.find(
            {"files_id": document["_id"]}, sort=[("n", ASCENDING)], batch_size=batch
        )
        n = 0
        try:
            while n < expected_chunks:
                with map_pymongo_errors():
                    chunk = await anext(cursor, None)
                if chunk is None or chunk.get("n") != n:
                    raise StorageError(f"file {document['_id']} is missing chunk {n}")
                data = bytes(chunk["data"])
                want = chunk_bytes if n < expected_chunks - 1 else length - chunk_bytes * n
                if len(data) != want:
                    raise StorageError(
                        f"file {document['_id']}: chunk {n} has {len(data)} bytes, not {want}"
                    )
                n += 1
                yield data
        finally:
            await cursor.close()

    async def _by_id(self, run: Any, filter: Filter) -> Any:
        """``run(filter)``; when it finds nothing, again with a 24-hex ``_id`` as an ObjectId
        (files uploaded by OpenFlow or by a driver have ObjectId ids)."""
        primary = _expand_id_lists(filter)
        result = await run(primary)
        if not result:
            variant = _objectid_variant(primary)
            if variant is not None:
                result = await run(variant)
        return result


class _ChunkWriter:
    """Cuts incoming pieces into GridFS chunks and inserts them a batch at a time."""

    def __init__(self, collection: Any, file_id: str, chunk_bytes: int, batch_chunks: int):
        self.collection = collection
        self.file_id = file_id
        self.chunk_bytes = chunk_bytes
        self.batch_chunks = batch_chunks
        self.pending = bytearray()
        self.batch: list[Document] = []
        self.n = 0
        self.length = 0
        self.written = False

    async def write(self, piece: bytes | bytearray | memoryview) -> None:
        """Take ``piece``; full chunks go to the store once a batch is full."""
        view = memoryview(piece).cast("B")
        if self.pending:
            take = view[: self.chunk_bytes - len(self.pending)]
            self.pending += take
            view = view[len(take) :]
            if len(self.pending) < self.chunk_bytes:
                return
            await self._add(bytes(self.pending))
            self.pending = bytearray()
        while len(view) >= self.chunk_bytes:
            await self._add(bytes(view[: self.chunk_bytes]))
            view = view[self.chunk_bytes :]
        if len(view):
            self.pending += view

    async def finish(self) -> int:
        """Write what is left; return the file's length."""
        if self.pending:
            await self._add(bytes(self.pending))
            self.pending = bytearray()
        await self._flush()
        return self.length

    async def _add(self, data: bytes) -> None:
        self.batch.append({"files_id": self.file_id, "n": self.n, "data": data})
        self.n += 1
        self.length += len(data)
        if len(self.batch) >= self.batch_chunks:
            await self._flush()

    async def _flush(self) -> None:
        if not self.batch:
            return
        self.written = True
        with map_pymongo_errors():
            await self.collection.insert_many(self.batch, ordered=True)
        self.batch = []
