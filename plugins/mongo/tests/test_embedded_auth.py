"""The embedded store asks for credentials: another process on the machine that connects to its
loopback port cannot read or write documents around the API. The server made the user on its
first start (while the store took only a client certificate) and keeps it in a ``0600`` file;
the data directory and the store's folder are ``0700``; secrets readable by others are named
in a warning at start."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo import errors as mongo_errors

from iapflow.platform import Platform
from iapflow.testing import JsonClient, make_test_config, serving
from iapflow_mongo.storage import CREDENTIALS_FILE, MongoStorage

pytestmark = pytest.mark.slow

EMBEDDED = {"backend": "mongo", "url": "embedded", "database": "openflow", "sync_on_commit": False}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def refused(uri: str) -> str:
    """What a client connecting with ``uri`` is told when it reads a collection."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=3000)
    try:
        with pytest.raises(mongo_errors.PyMongoError) as caught:
            await client.openflow.users.find_one({})
        with pytest.raises(mongo_errors.PyMongoError):
            await client.openflow.users.insert_one({"_id": "planted", "_type": "user"})
        return str(caught.value)
    finally:
        await client.close()


async def test_a_local_client_without_the_credentials_is_refused(tmp_path: Path) -> None:
    config = make_test_config(tmp_path, EMBEDDED, auth={"jwt_secret": ""})
    async with serving(config) as (base, platform):
        storage = platform.storage
        assert isinstance(storage, MongoStorage) and storage.embedded is not None
        port = storage.embedded.port
        anonymous = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        assert "requires authentication" in await refused(anonymous)
        guessed = f"mongodb://iapflow:guess@127.0.0.1:{port}/?directConnection=true"
        assert "authentication failed" in await refused(guessed)
        # the server itself works as before
        async with JsonClient(base + "/ws") as admin:
            await admin.signin("admin", "admin")
            await admin.call("insertone", collectionname="entities", item={"x": 1})
            assert (await admin.call("count", collectionname="entities"))["result"] == 1
    credentials = tmp_path / CREDENTIALS_FILE
    assert mode(credentials) == 0o600 and mode(tmp_path / "jwt_secret") == 0o600
    assert mode(tmp_path / "mongo") == 0o700
    assert set(json.loads(credentials.read_text())) == {"username", "password"}
    # a second start uses the same user; the documents are still there
    async with serving(config) as (base, _platform), JsonClient(base + "/ws") as admin:
        await admin.signin("admin", "admin")
        assert (await admin.call("count", collectionname="entities"))["result"] == 1


async def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    config = make_test_config(data, EMBEDDED, auth={"jwt_secret": ""})
    platform = Platform(config)
    platform.prepare()
    assert not data.exists()  # preparing checks, and writes nothing
    await platform.start_storage()
    try:
        assert mode(data) == 0o700 and mode(data / "jwt_secret") == 0o600
    finally:
        await platform.stop()


async def test_secrets_others_can_read_are_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_test_config(tmp_path, EMBEDDED, auth={"jwt_secret": ""})
    async with serving(config):
        pass
    (tmp_path / "jwt_secret").chmod(0o644)
    (tmp_path / CREDENTIALS_FILE).chmod(0o640)
    with caplog.at_level(logging.WARNING):
        async with serving(config):
            pass
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("jwt_secret", CREDENTIALS_FILE):
        assert f"{tmp_path / name} can be read by other users" in warned, warned
        assert f"chmod 600 {tmp_path / name}" in warned
