"""Files on the real server: savefile/getfile/updatefile over the JSON websocket, and the HTTP
routes GET /download/{id} and POST /upload, with the ACL in metadata._acl, deflate, the size
limit, clear errors, and streaming that does not hold whole files in memory."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from iapflow import wellknown
from iapflow.builtin.files.service import FileNotFound, secure_files
from iapflow.errors import AccessDenied, ApiError
from iapflow.platform import Platform
from iapflow.secure.acl import FULL_CONTROL, READ, UPDATE
from iapflow.secure.principal import Principal
from iapflow.testing import JsonClient, ReplyError, make_test_config

Connect = Callable[..., Awaitable[JsonClient]]
MB = 1024 * 1024
_names = itertools.count(1)


@pytest.fixture
def http(server: str) -> str:
    """The HTTP base URL of the test server."""
    return server.removesuffix("/ws").replace("ws://", "http://")


@pytest.fixture
def new_user(admin: JsonClient, connect: Connect) -> Callable[[], Awaitable[JsonClient]]:
    """A signed-in user whose client sends long messages in 1 MB pieces."""

    async def create() -> JsonClient:
        username = f"fileuser{next(_names)}"
        await admin.call(
            "insertone",
            collectionname="users",
            item={"_type": "user", "username": username, "name": username, "newpassword": "pw"},
        )
        client = await connect(package_size=1_000_000)
        await client.signin(username, "pw")
        return client

    return create


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bearer(client: JsonClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.jwt}"}


async def _still_works(client: JsonClient) -> None:
    assert (await client.call("count", collectionname="entities"))["result"] == 0


async def _blocks(size: int, block: bytes) -> AsyncIterator[bytes]:
    for _ in range(size // len(block)):
        yield block


async def _download(http: str, file_id: str, **kwargs: Any) -> tuple[httpx.Response, bytes]:
    async with (
        httpx.AsyncClient(timeout=60) as web,
        web.stream("GET", f"{http}/download/{file_id}", **kwargs) as response,
    ):
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    return response, body


# -- round trips ----------------------------------------------------------------------------------


async def test_20mb_round_trips_through_savefile_getfile_and_http(
    new_user: Callable[[], Awaitable[JsonClient]], http: str
) -> None:
    owner = await new_user()
    content = os.urandom(20 * MB)
    saved = await owner.call(
        "savefile",
        filename="big.bin",
        mimeType="application/x-big",
        file=_b64(content),
        metadata={"purpose": "test"},
    )
    assert "file" not in saved  # the whole file is not echoed back
    file_id = saved["id"]
    assert saved["result"]["_id"] == file_id
    assert saved["result"]["length"] == len(content)
    assert saved["result"]["metadata"]["purpose"] == "test"

    got = await owner.call("getfile", id=file_id)
    assert base64.b64decode(got["file"]) == content
    assert got["mimeType"] == "application/x-big"
    assert got["id"] == file_id
    assert got["metadata"]["filename"] == "big.bin"

    response, body = await _download(http, file_id, headers=_bearer(owner))
    assert response.status_code == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(content).digest()
    # a type /download does not know to be inert is served as bytes; getfile keeps the type
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["content-disposition"].startswith('attachment; filename="big.bin"')

    async with httpx.AsyncClient(timeout=60) as web:
        uploaded = await web.post(
            f"{http}/upload",
            params={"filename": "again.bin", "metadata": json.dumps({"via": "http"})},
            headers={**_bearer(owner), "Content-Type": "application/x-again"},
            content=_chunks_of(content),
        )
    assert uploaded.status_code == 201, uploaded.text
    doc = uploaded.json()
    assert doc["length"] == len(content) and doc["filename"] == "again.bin"
    assert doc["contentType"] == "application/x-again"
    assert doc["metadata"]["via"] == "http"
    got = await owner.call("getfile", id=doc["_id"])
    assert base64.b64decode(got["file"]) == content
    _response, body = await _download(http, doc["_id"], params={"jwt": owner.jwt})
    assert body == content


async def _chunks_of(content: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


async def test_getfile_by_filename_uniquename_first_newest_first(
    new_user: Callable[[], Awaitable[JsonClient]],
) -> None:
    owner = await new_user()
    await owner.call("savefile", filename="r.txt", file=_b64(b"old"), mimeType="text/plain")
    newer = await owner.call("savefile", filename="r.txt", file=_b64(b"new"))
    got = await owner.call("getfile", filename="r.txt")
    assert (got["id"], base64.b64decode(got["file"])) == (newer["id"], b"new")
    unique = newer["result"]["metadata"]["uniquename"]
    assert unique.endswith("-r.txt")
    # the uniquename is the server's: a client's value is replaced, on upload and on update
    named = await owner.call(
        "savefile", filename="other.txt", file=_b64(b"u"), metadata={"uniquename": unique}
    )
    assert named["result"]["metadata"]["uniquename"].endswith("-other.txt")
    await owner.call("updatefile", id=named["id"], metadata={"uniquename": unique})
    got = await owner.call("getfile", filename=unique)
    assert (got["id"], base64.b64decode(got["file"])) == (newer["id"], b"new")
    assert got["mimeType"] == "application/octet-stream"  # none given


async def test_compressed_upload_and_download(
    new_user: Callable[[], Awaitable[JsonClient]],
) -> None:
    owner = await new_user()
    content = b"compress me " * 50_000
    packed = zlib.compress(content)  # what pako.deflate produces
    saved = await owner.call("savefile", filename="z.txt", file=_b64(packed), compressed=True)
    assert saved["result"]["length"] == len(content)
    got = await owner.call("getfile", id=saved["id"], compress=True)
    assert len(got["file"]) < len(content) // 10
    assert zlib.decompress(base64.b64decode(got["file"])) == content
    plain = await owner.call("getfile", id=saved["id"])
    assert base64.b64decode(plain["file"]) == content
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(b"raw deflate") + raw.flush()
    saved = await owner.call("savefile", filename="raw", file=_b64(deflated), compressed=True)
    got = await owner.call("getfile", id=saved["id"])
    assert base64.b64decode(got["file"]) == b"raw deflate"


# -- access ---------------------------------------------------------------------------------------


async def test_default_acl_is_openflows(new_user: Callable[[], Awaitable[JsonClient]]) -> None:
    owner, other = await new_user(), await new_user()
    saved = await owner.call("savefile", filename="shared.txt", file=_b64(b"hi"))
    acl = {ace["_id"]: ace["rights"] for ace in saved["result"]["metadata"]["_acl"]}
    assert acl == {
        owner.user["_id"]: FULL_CONTROL,
        wellknown.FILESTORE_ADMINS: FULL_CONTROL,
        wellknown.FILESTORE_USERS: READ,
        wellknown.ADMINS: FULL_CONTROL,
    }
    # Every user is in "filestore users", so every user may read it, as in OpenFlow...
    got = await other.call("getfile", id=saved["id"])
    assert base64.b64decode(got["file"]) == b"hi"
    # ...but not change it.
    with pytest.raises(ReplyError, match="lack update right"):
        await other.call("updatefile", id=saved["id"], metadata={"x": 1})


async def test_reader_without_right_is_refused_until_granted(
    new_user: Callable[[], Awaitable[JsonClient]], http: str
) -> None:
    owner, other = await new_user(), await new_user()
    saved = await owner.call(
        "savefile", filename="private.txt", file=_b64(b"secret"), metadata={"_acl": []}
    )
    file_id = saved["id"]
    acl = {ace["_id"] for ace in saved["result"]["metadata"]["_acl"]}
    assert acl == {owner.user["_id"], wellknown.ADMINS}

    with pytest.raises(ReplyError, match=f"file {file_id} not found, or you lack read right"):
        await other.call("getfile", id=file_id)
    with pytest.raises(ReplyError, match="not found"):
        await other.call("getfile", filename="private.txt")
    response, _body = await _download(http, file_id, headers=_bearer(other))
    assert response.status_code == 404
    assert "lack read right" in json.loads(_body)["error"]
    listed = await other.call("query", collectionname="fs.files", query={})
    assert file_id not in {doc["_id"] for doc in listed["result"]}
    listed = await other.call("query", collectionname="files", query={})
    assert file_id not in {doc["_id"] for doc in listed["result"]}
    with pytest.raises(ReplyError, match="lack update right"):
        await other.call(
            "updatefile",
            id=file_id,
            metadata={"_acl": [{"_id": other.user["_id"], "rights": FULL_CONTROL}]},
        )
    await _still_works(other)

    grant = [*saved["result"]["metadata"]["_acl"], {"_id": other.user["_id"], "rights": READ}]
    updated = await owner.call("updatefile", id=file_id, metadata={"_acl": grant, "note": "x"})
    assert updated["result"]["metadata"]["note"] == "x"
    got = await other.call("getfile", id=file_id)
    assert base64.b64decode(got["file"]) == b"secret"
    response, body = await _download(http, file_id, headers=_bearer(other))
    assert (response.status_code, body) == (200, b"secret")
    listed = await other.call("query", collectionname="fs.files", query={"_id": file_id})
    assert [doc["_id"] for doc in listed["result"]] == [file_id]


async def test_updatefile_keeps_the_file_and_the_owners_update_right(
    new_user: Callable[[], Awaitable[JsonClient]],
) -> None:
    owner = await new_user()
    saved = await owner.call("savefile", filename="keep.txt", file=_b64(b"abc"))
    before = saved["result"]["metadata"]
    updated = await owner.call(
        "updatefile",
        id=saved["id"],
        metadata=json.dumps({"filename": "renamed", "_created": "2000-01-01T00:00:00Z", "k": 1}),
    )
    after = updated["result"]
    assert after["length"] == 3 and after["filename"] == "keep.txt"
    meta = after["metadata"]
    assert meta["filename"] == "keep.txt" and meta["k"] == 1
    assert meta["_created"] == before["_created"]
    assert meta["_createdbyid"] == owner.user["_id"]
    assert meta["_acl"] == before["_acl"]  # left out, so kept
    assert meta["_modified"] >= before["_modified"]
    with pytest.raises(ReplyError, match="take away your own update right"):
        await owner.call("updatefile", id=saved["id"], metadata={"_acl": []})
    got = await owner.call("getfile", id=saved["id"])
    assert base64.b64decode(got["file"]) == b"abc"
    with pytest.raises(ReplyError, match="file store; change files with the file commands"):
        await owner.call(
            "updateone", collectionname="fs.files", item={"_id": saved["id"], "metadata": {}}
        )


# -- bad input ------------------------------------------------------------------------------------


async def test_bad_input_gets_clear_errors_and_the_connection_keeps_working(
    new_user: Callable[[], Awaitable[JsonClient]],
) -> None:
    client = await new_user()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"command": "savefile", "filename": "a", "file": "not base64!!"}, "not valid base64"),
        ({"command": "savefile", "filename": "a"}, "file is required"),
        ({"command": "savefile", "file": _b64(b"x")}, "filename is required"),
        ({"command": "savefile", "filename": "a\nb", "file": ""}, "control characters"),
        ({"command": "savefile", "filename": "a", "file": "", "metadata": 3}, "metadata must"),
        (
            {"command": "savefile", "filename": "a", "file": "", "metadata": {"$x": 1}},
            "not allowed",
        ),
        (
            {"command": "savefile", "filename": "a", "file": _b64(b"plain"), "compressed": True},
            "not zlib/deflate data",
        ),
        (
            {
                "command": "savefile",
                "filename": "a",
                "file": _b64(zlib.compress(b"x" * 1000)[:-6]),
                "compressed": True,
            },
            "cut short",
        ),
        (
            {"command": "savefile", "filename": "a", "file": "", "mimeType": "text/html\r\nX: 1"},
            "mimeType must",
        ),
        (
            {"command": "savefile", "filename": "a", "file": "", "metadata": {"_acl": [{}]}},
            "_acl entry needs an _id",
        ),
        ({"command": "getfile", "id": "0123456789abcdef01234567"}, "not found"),
        ({"command": "getfile", "id": {"$ne": None}}, "id must be"),
        ({"command": "getfile"}, "give the id of the file, or its filename"),
        ({"command": "getfile", "filename": "no-such-name"}, "not found"),
        ({"command": "updatefile", "metadata": {}}, "updatefile needs id"),
        ({"command": "updatefile", "id": "nope", "metadata": {}}, "not found"),
    ]
    for case, message in cases:
        command = case.pop("command")
        with pytest.raises(ReplyError, match=message):
            await client.call(command, **case)
    await _still_works(client)
    # Line-wrapped base64 is fine.
    wrapped = base64.encodebytes(b"y" * 200).decode("ascii")
    saved = await client.call("savefile", filename="wrapped", file=wrapped)
    assert saved["result"]["length"] == 200


async def test_http_errors(new_user: Callable[[], Awaitable[JsonClient]], http: str) -> None:
    owner = await new_user()
    saved = await owner.call("savefile", filename="h.txt", file=_b64(b"h"))
    async with httpx.AsyncClient(timeout=30) as web:
        response = await web.get(f"{http}/download/{saved['id']}")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "no token" in response.json()["error"]
        response = await web.get(
            f"{http}/download/{saved['id']}", headers={"Authorization": "Bearer nonsense"}
        )
        assert response.status_code == 401
        assert "invalid token" in response.json()["error"]
        response = await web.get(
            f"{http}/download/0123456789abcdef01234567", params={"token": owner.jwt}
        )
        assert response.status_code == 404
        response = await web.get(f"{http}/download/{saved['id']}", params={"token": owner.jwt})
        assert (response.status_code, response.content) == (200, b"h")
        assert response.headers["x-content-type-options"] == "nosniff"

        response = await web.post(f"{http}/upload", content=b"x", params={"filename": "a"})
        assert response.status_code == 401
        response = await web.post(f"{http}/upload", content=b"x", headers=_bearer(owner))
        assert response.status_code == 400
        assert "filename is required" in response.json()["error"]
        response = await web.post(
            f"{http}/upload",
            content=b"x",
            params={"filename": "a", "metadata": "{not json"},
            headers=_bearer(owner),
        )
        assert response.status_code == 400
        assert "metadata must be an object" in response.json()["error"]
        response = await web.post(
            f"{http}/upload",
            files={"file": ("a.txt", b"x")},
            params={"filename": "a"},
            headers=_bearer(owner),
        )
        assert response.status_code == 400
        assert "raw request body" in response.json()["error"]
        response = await web.post(
            f"{http}/upload",
            content="ünïcode".encode(),
            headers={
                **_bearer(owner),
                "X-Filename": "%C3%A9t%C3%A9.txt",
                "X-Metadata": json.dumps({"_acl": []}),
                "Content-Type": "text/plain; charset=utf-8",
            },
        )
        assert response.status_code == 201, response.text
        doc = response.json()
        assert doc["filename"] == "été.txt"
        assert doc["metadata"]["_acl"][0]["_id"] == owner.user["_id"]
        response = await web.get(f"{http}/download/{doc['_id']}", headers=_bearer(owner))
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        disposition = response.headers["content-disposition"]
        assert disposition == (
            "attachment; filename=\"_t_.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"
        )
        assert response.content == "ünïcode".encode()
    await _still_works(owner)


# -- memory ---------------------------------------------------------------------------------------


async def test_http_upload_and_download_stream_instead_of_buffering(
    new_user: Callable[[], Awaitable[JsonClient]], http: str
) -> None:
    # Server and client share this process, so traced memory counts both sides; a file held
    # whole anywhere would show as a 20 MB peak.
    owner = await new_user()
    size, block = 20 * MB, os.urandom(64 * 1024)
    async with httpx.AsyncClient(timeout=60) as web:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            response = await web.post(
                f"{http}/upload",
                params={"filename": "stream.bin"},
                headers=_bearer(owner),
                content=_blocks(size, block),
            )
            upload_peak = tracemalloc.get_traced_memory()[1] - base
            assert response.status_code == 201, response.text
            file_id = response.json()["_id"]

            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            digest, total = hashlib.sha256(), 0
            async with web.stream(
                "GET", f"{http}/download/{file_id}", headers=_bearer(owner)
            ) as download:
                async for chunk in download.aiter_raw():
                    digest.update(chunk)
                    total += len(chunk)
            download_peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    assert (total, digest.digest()) == (size, expected.digest())
    assert upload_peak < 8 * MB, upload_peak
    assert download_peak < 8 * MB, download_peak


# -- size limit -----------------------------------------------------------------------------------


class TestSizeLimit:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        return {"files": {"max_file_bytes": 100_000}}

    async def test_savefile_over_the_limit(
        self, new_user: Callable[[], Awaitable[JsonClient]], admin: JsonClient
    ) -> None:
        client = await new_user()
        message = r"larger than the limit of 100000 bytes \(97\.6562 KiB\).*files\.max_file_bytes"
        with pytest.raises(ReplyError, match=message):
            await client.call("savefile", filename="big", file=_b64(os.urandom(100_001)))
        bomb = zlib.compress(b"\0" * 10_000_000)
        assert len(bomb) < 100_000
        with pytest.raises(ReplyError, match=message):
            await client.call("savefile", filename="bomb", file=_b64(bomb), compressed=True)
        packed = zlib.compress(os.urandom(120_000))  # refused before it is even inflated
        with pytest.raises(ReplyError, match=message):
            await client.call("savefile", filename="noise", file=_b64(packed), compressed=True)
        saved = await client.call("savefile", filename="fits", file=_b64(b"a" * 100_000))
        assert saved["result"]["length"] == 100_000
        files = await admin.call("query", collectionname="fs.files", query={})
        assert [doc["filename"] for doc in files["result"]] == ["fits"]
        await _still_works(client)

    async def test_http_upload_over_the_limit(
        self, new_user: Callable[[], Awaitable[JsonClient]], admin: JsonClient, http: str
    ) -> None:
        client = await new_user()
        async with httpx.AsyncClient(timeout=30) as web:
            declared = await web.post(
                f"{http}/upload",
                params={"filename": "declared"},
                headers=_bearer(client),
                content=os.urandom(100_001),
            )
            assert declared.status_code == 413
            assert "files.max_file_bytes" in declared.json()["error"]
            streamed = await web.post(
                f"{http}/upload",
                params={"filename": "streamed"},
                headers=_bearer(client),
                content=_blocks(1_000_000, os.urandom(10_000)),
            )
            assert streamed.status_code == 413
            fits = await web.post(
                f"{http}/upload",
                params={"filename": "fits"},
                headers=_bearer(client),
                content=os.urandom(100_000),
            )
            assert fits.status_code == 201
        files = await admin.call("query", collectionname="fs.files", query={})
        assert [doc["filename"] for doc in files["result"]] == ["fits"]
        await _still_works(client)


# -- the service itself (what the commands do not reach yet) --------------------------------------


async def test_service_delete_and_read_limit(tmp_path: Path, mongo_storage: dict[str, Any]) -> None:
    platform = Platform(make_test_config(tmp_path, mongo_storage))
    await platform.start()
    try:
        files = secure_files(platform)
        owner = Principal(id="u-owner", name="owner", username="owner")
        reader = Principal(id="u-reader", name="reader", username="reader")

        async def one(data: bytes) -> AsyncIterator[bytes]:
            yield data

        acl = [{"_id": reader.id, "rights": READ | UPDATE}]
        doc = await files.save(
            owner, one(b"d"), filename="d", content_type=None, metadata={"_acl": acl}
        )
        with pytest.raises(FileNotFound, match="lack delete right"):
            await files.delete(reader, doc["_id"])
        with pytest.raises(AccessDenied):
            await files.update_metadata(reader, doc["_id"], {"_acl": []})
        big = await files.save(
            owner, one(b"x" * 1000), filename="big", content_type=None, metadata={}
        )
        with pytest.raises(ApiError, match=r"1000 bytes, more than files\.max_file_bytes \(10\)"):
            await files.read(owner, file_id=big["_id"], max_bytes=10)
        assert (await files.read(owner, file_id=big["_id"]))[1] == b"x" * 1000
        with pytest.raises(FileNotFound):  # no roles, so not in "filestore users"
            await files.read(reader, file_id=big["_id"])
        await files.delete(owner, doc["_id"])
        with pytest.raises(FileNotFound):
            await files.delete(owner, doc["_id"])
        indexes = await platform.storage.list_indexes("fs.files")
        assert any("metadata.uniquename" in dict(i["key"]) for i in indexes)
    finally:
        await platform.stop()


@pytest.mark.parametrize("collection", ["files", "fs.files"])
async def test_deleteone_on_files_deletes_the_file_for_those_with_delete_right(
    new_user: Callable[[], Awaitable[JsonClient]], collection: str
) -> None:
    owner, other = await new_user(), await new_user()
    saved = await owner.call("savefile", filename="gone.txt", file=_b64(b"bye"))
    with pytest.raises(ReplyError, match="delete right"):
        await other.call("deleteone", collectionname=collection, id=saved["id"])
    reply = await owner.call("deleteone", collectionname=collection, id=saved["id"])
    assert reply["affectedrows"] == 1
    with pytest.raises(ReplyError, match="not found"):
        await owner.call("getfile", id=saved["id"])
