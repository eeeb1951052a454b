"""iapflow-mongo: the storage contract on the real MongoDB-compatible server, plus its own rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from iapflow.contracts.storage import StorageContext
from iapflow.errors import ConfigError, StorageError
from iapflow.testing.contracts import StorageContract
from iapflow_mongo.storage import MongoStorage, build_storage


class TestMongoStorageContract(StorageContract):
    @pytest.fixture
    async def storage(self, mongo_storage: dict[str, Any]) -> AsyncIterator[MongoStorage]:
        store = MongoStorage(mongo_storage["url"], mongo_storage["database"])
        await store.start()
        try:
            yield store
        finally:
            await store.stop()


def test_plugin_is_installed() -> None:
    entry_points = metadata.entry_points(group="iapflow")
    assert "mongo" in entry_points.names
    assert entry_points["mongo"].load().__name__ == "iapflow_mongo.plugin"


def test_embedded_is_the_default(tmp_path: Path) -> None:
    store = build_storage({}, StorageContext(tmp_path))
    assert store.embedded is not None
    assert store.embedded.storage_path == str(tmp_path / "mongo")
    assert store.embedded.sync_on_commit is True
    assert store.database_name == "openflow"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "postgres://x"}, "storage.url"),
        ({"database": ""}, "storage.database"),
        ({"server_selection_timeout_ms": 0}, "storage.server_selection_timeout_ms"),
        ({"uri": "x"}, "storage.uri"),
    ],
)
def test_bad_options_name_the_key(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_storage(options, StorageContext(tmp_path))
    assert error.value.key == key


async def test_unreachable_server_is_a_storage_error(tmp_path: Path) -> None:
    store = build_storage(
        {"url": "mongodb://127.0.0.1:9/", "server_selection_timeout_ms": 300},
        StorageContext(tmp_path),
    )
    with pytest.raises(StorageError, match="storage unavailable"):
        await store.start()
    await store.stop()


async def test_string_ids_also_match_objectids(mongo_storage: dict[str, Any]) -> None:
    from bson import ObjectId

    store = MongoStorage(mongo_storage["url"], mongo_storage["database"])
    await store.start()
    try:
        oid = ObjectId()
        await store.db["c"].insert_one({"_id": oid, "v": 1})
        assert (await store.find_one("c", {"_id": str(oid)})) == {"_id": oid, "v": 1}
        assert await store.count("c", {"$and": [{"_id": str(oid)}, {"v": 1}]}) == 1
        assert await store.delete_many("c", {"_id": {"$in": [str(oid)]}}) == 1
    finally:
        await store.stop()
