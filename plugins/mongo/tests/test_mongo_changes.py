"""iapflow-mongo's change stream beyond the contract: pre-images, a dropped database, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iapflow.contracts.storage import ChangeStream
from iapflow_mongo.storage import MongoStorage


@pytest.fixture
async def store(mongo_storage: dict[str, Any]) -> AsyncIterator[MongoStorage]:
    storage = MongoStorage(mongo_storage["url"], mongo_storage["database"])
    await storage.start()
    try:
        yield storage
    finally:
        await storage.stop()


async def _next(stream: ChangeStream) -> dict[str, Any]:
    return await asyncio.wait_for(anext(stream), 10)


async def test_pre_images_where_the_collection_keeps_them(store: MongoStorage) -> None:
    await store.create_collection("kept", {"changeStreamPreAndPostImages": {"enabled": True}})
    for collection in ("kept", "plain"):
        await store.insert_one(collection, {"_id": "d", "v": 1})
    stream = await store.watch_changes()
    try:
        for collection in ("kept", "plain"):
            await store.delete_one(collection, {"_id": "d"})
        kept, plain = await _next(stream), await _next(stream)
    finally:
        await stream.close()
    assert kept["operationType"] == "delete" and kept["ns"]["coll"] == "kept"
    assert kept["fullDocumentBeforeChange"] == {"_id": "d", "v": 1}
    assert plain["ns"]["coll"] == "plain" and plain.get("fullDocumentBeforeChange") is None


async def test_the_stream_goes_on_after_the_database_is_dropped(store: MongoStorage) -> None:
    stream = await store.watch_changes()
    try:
        await store.insert_one("c", {"_id": "before"})
        assert (await _next(stream))["documentKey"] == {"_id": "before"}
        await store.db.client.drop_database(store.database_name)
        await store.insert_one("c", {"_id": "after"})
        seen = []
        while not seen or seen[-1] != ("insert", "after"):
            event = await _next(stream)
            seen.append((event["operationType"], event.get("documentKey", {}).get("_id")))
    finally:
        await stream.close()
    assert "invalidate" not in [operation for operation, _ in seen]
    assert seen[-1] == ("insert", "after")


async def test_closed_stream_ends_and_keeps_its_token(store: MongoStorage) -> None:
    stream = await store.watch_changes()
    token = stream.resume_token
    assert token is not None
    await stream.close()
    await stream.close()
    assert stream.resume_token == token
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_file_chunks_stay_off_the_stream(store: MongoStorage) -> None:
    stream = await store.watch_changes()
    try:
        await store.insert_one(
            "fs.chunks", {"_id": "c1", "files_id": "f", "n": 0, "data": b"x" * 1024}
        )
        await store.insert_one("fs.files", {"_id": "f", "length": 1024})
        event = await _next(stream)
    finally:
        await stream.close()
    assert event["ns"]["coll"] == "fs.files"
