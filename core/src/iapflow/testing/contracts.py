"""Contract test suites a backend plugin subclasses to prove it keeps iapflow's contract.

Subclass :class:`StorageContract` in the plugin's tests and provide a ``storage`` fixture that
yields a started :class:`iapflow.contracts.storage.Storage` on an empty database::

    class TestMyStorage(StorageContract):
        @pytest.fixture
        async def storage(self): ...

A backend with a file store does the same with :class:`FileStoreContract` and a ``file_store``
fixture.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iapflow.contracts.files import FileStore
from iapflow.contracts.storage import Storage
from iapflow.errors import DuplicateKeyError, InvalidQuery, StorageError
from iapflow.secure.acl import READ, acl_condition

C = "contract"


class StorageContract:
    """What every storage backend must do, as the data layer uses it."""

    supports_change_streams = True
    """Set to False in a subclass for a backend without change streams (no watches then)."""

    async def test_insert_and_find_with_sort_skip_limit_projection(self, storage: Storage) -> None:
        await storage.insert_many(C, [{"_id": f"id{i}", "n": i, "s": "x"} for i in range(5)])
        found = await storage.find(
            C, {"s": "x"}, projection={"n": 1}, sort=[("n", -1)], skip=1, limit=2
        )
        assert found == [{"_id": "id3", "n": 3}, {"_id": "id2", "n": 2}]

    async def test_find_one_count_distinct(self, storage: Storage) -> None:
        await storage.insert_many(
            C, [{"_id": "a", "k": 1}, {"_id": "b", "k": 1}, {"_id": "c", "k": 2}]
        )
        assert (await storage.find_one(C, {"_id": "b"})) == {"_id": "b", "k": 1}
        assert await storage.find_one(C, {"_id": "zz"}) is None
        assert await storage.count(C, {"k": 1}) == 2
        assert sorted(await storage.distinct(C, "k", {})) == [1, 2]

    async def test_regex_values(self, storage: Storage) -> None:
        await storage.insert_many(C, [{"_id": "a", "name": "Alpha"}, {"_id": "b", "name": "beta"}])
        found = await storage.find(C, {"name": re.compile("^al", re.IGNORECASE)})
        assert [d["_id"] for d in found] == ["a"]

    async def test_acl_condition_with_deny(self, storage: Storage) -> None:
        await storage.insert_many(
            C,
            [
                {"_id": "granted", "_acl": [{"_id": "u", "rights": 2}]},
                {
                    "_id": "denied",
                    "_acl": [{"_id": "u", "rights": 2}, {"_id": "r", "rights": 2, "deny": True}],
                },
                {"_id": "other", "_acl": [{"_id": "x", "rights": 65535}]},
                {"_id": "noread", "_acl": [{"_id": "u", "rights": 4}]},
            ],
        )
        found = await storage.find(C, {"_acl": acl_condition(["u", "r"], READ)})
        assert [d["_id"] for d in found] == ["granted"]

    async def test_aggregate_lookup_with_pipeline_and_local_field(self, storage: Storage) -> None:
        await storage.insert_many(C, [{"_id": "o1", "ref": "p1"}, {"_id": "o2", "ref": "p2"}])
        await storage.insert_many(C + "2", [{"_id": "p1", "ok": True}, {"_id": "p2", "ok": False}])
        result = await storage.aggregate(
            C,
            [
                {
                    "$lookup": {
                        "from": C + "2",
                        "localField": "ref",
                        "foreignField": "_id",
                        "pipeline": [{"$match": {"ok": True}}],
                        "as": "j",
                    }
                },
                {"$sort": {"_id": 1}},
            ],
        )
        assert [len(d["j"]) for d in result] == [1, 0]

    async def test_replace_update_delete(self, storage: Storage) -> None:
        await storage.insert_one(C, {"_id": "d", "v": 1, "_version": 0})
        assert await storage.replace_one(C, {"_id": "d", "_version": 5}, {"_id": "d", "v": 9}) == 0
        assert (
            await storage.replace_one(
                C, {"_id": "d", "_version": 0}, {"_id": "d", "v": 2, "_version": 1}
            )
            == 1
        )
        after = await storage.update_one(C, {"_id": "d"}, {"$inc": {"v": 1}})
        assert after is not None and after["v"] == 3
        assert await storage.update_one(C, {"_id": "missing"}, {"$inc": {"v": 1}}) is None
        assert await storage.update_many(C, {}, {"$set": {"w": 1}}) == (1, 1)
        assert await storage.delete_one(C, {"_id": "d"}) == 1
        assert await storage.delete_many(C, {}) == 0

    async def test_find_one_and_update_takes_in_sort_order_once(self, storage: Storage) -> None:
        await storage.insert_many(
            C, [{"_id": f"w{i}", "state": "new", "priority": i % 3} for i in range(12)]
        )

        async def take(n: int) -> str | None:
            doc = await storage.find_one_and_update(
                C,
                {"state": "new"},
                {"$set": {"state": "taken", "by": n}},
                sort=[("priority", 1), ("_id", 1)],
            )
            return None if doc is None else str(doc["_id"])

        first = await take(-1)
        assert first == "w0"
        taken = await asyncio.gather(*(take(n) for n in range(15)))
        got = [t for t in taken if t is not None]
        assert sorted(got) == sorted(f"w{i}" for i in range(1, 12))
        assert taken.count(None) == 4
        after = await storage.find(C, {"_id": "w3"})
        assert after[0]["state"] == "taken"

    async def test_unique_index_raises_duplicate_key(self, storage: Storage) -> None:
        await storage.create_index(C, [("username", 1)], unique=True, sparse=True)
        await storage.insert_one(C, {"_id": "1", "username": "a"})
        await storage.insert_one(C, {"_id": "2"})  # sparse: documents without it are fine
        await storage.insert_one(C, {"_id": "3"})
        with pytest.raises(DuplicateKeyError):
            await storage.insert_one(C, {"_id": "4", "username": "a"})
        with pytest.raises(DuplicateKeyError):
            await storage.insert_one(C, {"_id": "1"})

    async def test_indexes_listed_and_dropped(self, storage: Storage) -> None:
        name = await storage.create_index(C, [("a", 1), ("b", -1)], options={"name": "ab"})
        assert name == "ab"
        listed = {i["name"]: i for i in await storage.list_indexes(C)}
        assert dict(listed["ab"]["key"]) == {"a": 1, "b": -1}
        await storage.drop_index(C, "ab")
        assert "ab" not in {i["name"] for i in await storage.list_indexes(C)}
        with pytest.raises(InvalidQuery):
            await storage.drop_index(C, "ab")

    async def test_bad_operator_is_invalid_query(self, storage: Storage) -> None:
        with pytest.raises(InvalidQuery):
            await storage.find(C, {"a": {"$nosuchoperator": 1}})

    async def test_collections_create_list_drop(self, storage: Storage) -> None:
        await storage.create_collection("made", {})
        assert "made" in {c["name"] for c in await storage.list_collections()}
        await storage.drop_collection("made")
        await storage.drop_collection("never-existed")
        assert "made" not in {c["name"] for c in await storage.list_collections()}

    async def test_change_stream_events_and_resume(self, storage: Storage) -> None:
        if not self.supports_change_streams:
            with pytest.raises(StorageError):
                await storage.watch_changes()
            return
        stream = await storage.watch_changes()
        try:
            await storage.insert_one(C, {"_id": "w", "v": 1})
            await storage.update_one(C, {"_id": "w"}, {"$set": {"v": 2}})
            await storage.replace_one(C, {"_id": "w"}, {"_id": "w", "v": 3})
            await storage.delete_one(C, {"_id": "w"})
            events = [await asyncio.wait_for(anext(stream), 10) for _ in range(4)]
            token = stream.resume_token
        finally:
            await stream.close()
        assert [e["operationType"] for e in events] == ["insert", "update", "replace", "delete"]
        assert all(e["ns"]["coll"] == C and e["documentKey"] == {"_id": "w"} for e in events)
        assert events[0]["fullDocument"] == {"_id": "w", "v": 1}
        assert events[1]["updateDescription"]["updatedFields"] == {"v": 2}
        assert events[2]["fullDocument"] in ({"_id": "w", "v": 3}, None)  # None: gone by then
        assert "fullDocument" not in events[3] or events[3]["fullDocument"] is None
        # Written while no stream is open: a stream from the token gets them, and only them.
        await storage.insert_one(C, {"_id": "x1"})
        await storage.insert_one(C, {"_id": "x2"})
        resumed = await storage.watch_changes(token)
        try:
            got = [await asyncio.wait_for(anext(resumed), 10) for _ in range(2)]
            await storage.insert_one(C, {"_id": "x3"})
            got.append(await asyncio.wait_for(anext(resumed), 10))
            assert resumed.resume_token is not None
        finally:
            await resumed.close()
        assert [(e["operationType"], e["documentKey"]["_id"]) for e in got] == [
            ("insert", "x1"),
            ("insert", "x2"),
            ("insert", "x3"),
        ]


# -- file stores ---------------------------------------------------------------------------------


async def _pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(store: FileStore, file_id: Any) -> bytes:
    download = await store.open(file_id)
    assert download is not None
    async with download:
        return b"".join([chunk async for chunk in download.chunks])


class FileStoreContract:
    """What every file store must do, as :mod:`iapflow.builtin.files.service` uses it.

    Subclass it with a ``file_store`` fixture that yields a
    :class:`iapflow.contracts.files.FileStore` on an empty database.
    """

    async def test_pieces_of_any_size_round_trip(self, file_store: FileStore) -> None:
        content = os.urandom(700_001)
        parts = (content[:1], content[1:100_000], content[100_000:100_000], content[100_000:])
        doc = await file_store.upload(
            _pieces(*parts), filename="a.bin", content_type="application/x-test", metadata={"k": 1}
        )
        assert isinstance(doc["_id"], str) and len(doc["_id"]) == 24
        assert doc["filename"] == "a.bin"
        assert doc["contentType"] == "application/x-test"
        assert doc["length"] == len(content)
        assert doc["metadata"] == {"k": 1}
        assert doc["uploadDate"] is not None
        assert await _read(file_store, doc["_id"]) == content
        [found] = await file_store.find({"_id": doc["_id"]})
        assert found["length"] == len(content) and found["metadata"] == {"k": 1}

    async def test_empty_file_and_given_id(self, file_store: FileStore) -> None:
        doc = await file_store.upload(
            _pieces(), filename="empty", content_type="text/plain", metadata={}, file_id="f1"
        )
        assert doc["_id"] == "f1" and doc["length"] == 0
        assert await _read(file_store, "f1") == b""
        assert await file_store.open("no-such-file") is None

    async def test_find_filters_sorts_and_limits(self, file_store: FileStore) -> None:
        for index, user in enumerate(["u1", "u2", "u1"]):
            await file_store.upload(
                _pieces(b"x" * index),
                filename="same",
                content_type="text/plain",
                metadata={"i": index, "_acl": [{"_id": user, "rights": READ}]},
            )
        mine = await file_store.find(
            {"metadata._acl": acl_condition(["u1"], READ)}, sort=[("metadata.i", -1)]
        )
        assert [d["metadata"]["i"] for d in mine] == [2, 0]
        first = await file_store.find({"filename": "same"}, sort=[("metadata.i", 1)], limit=1)
        assert [d["metadata"]["i"] for d in first] == [0]
        assert len(await file_store.find({"filename": "same"}, skip=1)) == 2

    async def test_update_metadata_keeps_the_file(self, file_store: FileStore) -> None:
        doc = await file_store.upload(
            _pieces(b"abc"), filename="m.txt", content_type="text/plain", metadata={"a": 1}
        )
        after = await file_store.update_metadata(doc["_id"], {"b": 2})
        assert after is not None and after["metadata"] == {"b": 2}
        kept = (after["filename"], after["length"], after["contentType"])
        assert kept == ("m.txt", 3, "text/plain")
        assert await _read(file_store, doc["_id"]) == b"abc"
        assert await file_store.update_metadata("no-such-file", {"b": 3}) is None

    async def test_delete_removes_document_and_bytes(self, file_store: FileStore) -> None:
        doc = await file_store.upload(
            _pieces(os.urandom(300_000)), filename="d", content_type="x/y", metadata={}
        )
        assert await file_store.delete(doc["_id"]) is True
        assert await file_store.open(doc["_id"]) is None
        assert await file_store.find({"_id": doc["_id"]}) == []
        assert await file_store.delete(doc["_id"]) is False

    async def test_failing_source_stores_nothing(self, file_store: FileStore) -> None:
        async def failing() -> AsyncIterator[bytes]:
            yield os.urandom(600_000)
            raise RuntimeError("client went away")

        with pytest.raises(RuntimeError, match="client went away"):
            await file_store.upload(
                failing(), filename="f", content_type="x/y", metadata={}, file_id="broken"
            )
        assert await file_store.open("broken") is None
        assert await file_store.find({}) == []
        # The id is free again: nothing of the failed upload is in the way.
        doc = await file_store.upload(
            _pieces(b"ok"), filename="f", content_type="x/y", metadata={}, file_id="broken"
        )
        assert await _read(file_store, doc["_id"]) == b"ok"

    async def test_download_closed_early(self, file_store: FileStore) -> None:
        doc = await file_store.upload(
            _pieces(os.urandom(2_000_000)), filename="big", content_type="x/y", metadata={}
        )
        download = await file_store.open(doc["_id"])
        assert download is not None
        first = await anext(download.chunks)
        assert 0 < len(first) < 2_000_000
        await download.close()
        await download.close()
        await file_store.ensure_indexes()
