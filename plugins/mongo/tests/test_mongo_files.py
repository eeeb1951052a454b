"""iapflow-mongo's file store: the file store contract on the real MongoDB-compatible server,
GridFS compatibility both ways, and bounded memory while streaming."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import ObjectId
from gridfs import AsyncGridFSBucket

from iapflow.testing.contracts import FileStoreContract
from iapflow_mongo.files import MongoFileStore
from iapflow_mongo.storage import MongoStorage


@pytest.fixture
async def mongo(mongo_storage: dict[str, Any]) -> AsyncIterator[MongoStorage]:
    store = MongoStorage(mongo_storage["url"], mongo_storage["database"])
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


class TestMongoFileStoreContract(FileStoreContract):
    @pytest.fixture
    def file_store(self, mongo: MongoStorage) -> MongoFileStore:
        return mongo.file_store()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_storage_returns_one_gridfs_store(mongo: MongoStorage) -> None:
    store = mongo.file_store()
    assert store is mongo.file_store()
    assert store.files.name == "fs.files" and store.chunks.name == "fs.chunks"


async def test_pymongo_gridfs_reads_what_we_write(mongo: MongoStorage) -> None:
    content = os.urandom(600_000)
    doc = await mongo.file_store().upload(
        _once(content), filename="ours.bin", content_type="x/y", metadata={"a": 1}
    )
    bucket = AsyncGridFSBucket(mongo.db)
    grid_out = await bucket.open_download_stream(doc["_id"])
    assert await grid_out.read() == content
    assert grid_out.metadata == {"a": 1}
    assert grid_out.filename == "ours.bin"
    chunk_sizes = [len(c["data"]) async for c in mongo.db["fs.chunks"].find().sort("n", 1)]
    assert chunk_sizes == [255 * 1024, 255 * 1024, 600_000 - 2 * 255 * 1024]


async def test_we_read_what_pymongo_gridfs_wrote(mongo: MongoStorage) -> None:
    # Files from OpenFlow or a driver have ObjectId ids; their 24-hex string finds them too.
    content = os.urandom(300_000)
    bucket = AsyncGridFSBucket(mongo.db)
    oid = await bucket.upload_from_stream("theirs.bin", content, metadata={"b": 2})
    assert isinstance(oid, ObjectId)
    store = mongo.file_store()
    [found] = await store.find({"_id": str(oid)})
    assert found["metadata"] == {"b": 2}
    for file_id in (oid, str(oid)):
        download = await store.open(file_id)
        assert download is not None
        async with download:
            assert b"".join([c async for c in download.chunks]) == content
    after = await store.update_metadata(str(oid), {"b": 3})
    assert after is not None and after["metadata"] == {"b": 3}
    assert await store.delete(str(oid)) is True
    assert await mongo.db["fs.chunks"].count_documents({}) == 0


async def test_failed_upload_leaves_no_chunks(mongo: MongoStorage) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(3 * 1024 * 1024)
        raise ValueError("too big")

    with pytest.raises(ValueError, match="too big"):
        await mongo.file_store().upload(failing(), filename="f", content_type="x/y", metadata={})
    assert await mongo.db["fs.chunks"].count_documents({}) == 0
    assert await mongo.db["fs.files"].count_documents({}) == 0


async def test_missing_chunk_is_a_storage_error(mongo: MongoStorage) -> None:
    from iapflow.errors import StorageError

    store = mongo.file_store()
    doc = await store.upload(
        _once(os.urandom(600_000)), filename="f", content_type="x/y", metadata={}
    )
    await mongo.db["fs.chunks"].delete_one({"files_id": doc["_id"], "n": 1})
    download = await store.open(doc["_id"])
    assert download is not None
    with pytest.raises(StorageError, match="missing chunk 1"):
        async with download:
            async for _chunk in download.chunks:
                pass


async def test_streaming_holds_a_few_chunks_not_the_file(mongo: MongoStorage) -> None:
    size, piece = 20 * 1024 * 1024, 64 * 1024
    block = os.urandom(piece)

    async def source() -> AsyncIterator[bytes]:
        for _ in range(size // piece):
            yield bytes(block)

    store = mongo.file_store()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        doc = await store.upload(source(), filename="big", content_type="x/y", metadata={})
        upload_peak = tracemalloc.get_traced_memory()[1] - base

        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        download = await store.open(doc["_id"])
        assert download is not None
        total = 0
        async with download:
            async for chunk in download.chunks:
                total += len(chunk)
        download_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert total == size
    # About one batch of chunks (1 MiB) plus driver buffers; the file is 20 MiB.
    assert upload_peak < 6 * 1024 * 1024, upload_peak
    assert download_peak < 6 * 1024 * 1024, download_peak
