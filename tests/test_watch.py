"""Watches: ``watch``/``unwatch`` and ``watchevent`` pushes, on the real MongoDB-compatible server.

Every test runs its own iapflow server with one change stream; an admin watching the same
collection sees every event, so its events tell when the hub has handled a write, and the other
watchers can then be checked for exactly what they got.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from iapflow import hookimpl, wellknown
from iapflow.builtin.watch.commands import hub_for
from iapflow.builtin.watch.match import compile_match
from iapflow.builtin.watch.paths import normalise_jsonpath, parse_watch_filter
from iapflow.errors import ApiError
from iapflow.plugins import Plugins
from iapflow.secure.acl import READ
from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server
from iapflow_mongo.embedded import EmbeddedServer, free_port

C = "watched"
MakeUser = Callable[..., Awaitable[JsonClient]]
Event = tuple[str, str]  # (operationType, document _id)


# -- helpers --------------------------------------------------------------------------------------


async def watch(client: JsonClient, collection: str = C, **extra: Any) -> str:
    reply = await client.call("watch", collectionname=collection, **extra)
    assert reply["id"] == reply["result"]
    return str(reply["id"])


async def next_event(client: JsonClient, wait: float = 15.0) -> dict[str, Any]:
    """The next ``watchevent`` push (other pushes are skipped)."""
    while True:
        command, data = await asyncio.wait_for(client.pushes.get(), wait)
        if command == "watchevent":
            return data


async def drain(client: JsonClient, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Every ``watchevent`` that arrives until none has come for ``quiet`` seconds."""
    found = []
    with contextlib.suppress(TimeoutError):
        while True:
            found.append(await next_event(client, quiet))
    return found


def brief(events: list[dict[str, Any]]) -> list[Event]:
    return [(e["result"]["operationType"], e["result"]["documentKey"]["_id"]) for e in events]


async def seen_by_admin(admin: JsonClient, operation: str, doc_id: str) -> dict[str, Any]:
    """Wait for the admin's event of a write: after it, the hub has queued it for everyone."""
    event = await next_event(admin)
    assert brief([event]) == [(operation, doc_id)]
    return event


def acl(*readers: str) -> list[dict[str, Any]]:
    return [{"_id": reader, "rights": READ} for reader in readers]


async def refused(client: JsonClient, command: str, **data: Any) -> str:
    with pytest.raises(ReplyError) as error:
        await client.call(command, **data)
    return str(error.value)


# -- a server whose platform the tests can look at ---------------------------------------------


class _KeepPlatform:
    def __init__(self) -> None:
        self.platform: Any = None

    @hookimpl
    def startup(self, platform: Any) -> None:
        self.platform = platform


@pytest.fixture
def kept() -> _KeepPlatform:
    return _KeepPlatform()


@pytest.fixture
def iapflow_plugins(kept: _KeepPlatform) -> Plugins:
    """The suite's server, keeping the platform in ``kept``."""
    plugins = Plugins()
    plugins.register(kept, name="test-keep-platform")
    return plugins


@pytest.fixture
async def alice(make_user: MakeUser) -> JsonClient:
    return await make_user("alice")


@pytest.fixture
async def bob(make_user: MakeUser) -> JsonClient:
    return await make_user("bob")


# -- who gets what ------------------------------------------------------------------------------


async def test_two_users_each_get_exactly_the_events_of_documents_they_can_read(
    admin: JsonClient, alice: JsonClient, bob: JsonClient
) -> None:
    a, b = alice.user["_id"], bob.user["_id"]
    readers = {"for-alice": [a], "for-bob": [b], "for-both": [a, b], "for-nobody": []}
    ids = {await watch(admin), await watch(alice), await watch(bob)}
    assert len(ids) == 3

    for name, who in readers.items():
        await admin.call("insertone", collectionname=C, item={"_id": name, "_acl": acl(*who)})
        inserted = await seen_by_admin(admin, "insert", name)
    for name in readers:
        await admin.call(
            "updateone", collectionname=C, query={"_id": name}, item={"$set": {"n": 1}}
        )
        updated = await seen_by_admin(admin, "update", name)
    for name, who in readers.items():
        item = {"_id": name, "n": 2, "_acl": acl(*who)}
        await admin.call("updateone", collectionname=C, item=item)
        replaced = await seen_by_admin(admin, "replace", name)
    for name in readers:
        await admin.call("deleteone", collectionname=C, id=name)
        deleted = await seen_by_admin(admin, "delete", name)

    operations = ("insert", "update", "replace", "delete")
    got_alice, got_bob = await drain(alice), await drain(bob)
    assert brief(got_alice) == [(op, n) for op in operations for n in ("for-alice", "for-both")]
    assert brief(got_bob) == [(op, n) for op in operations for n in ("for-bob", "for-both")]
    assert await drain(admin, 0.2) == []

    # The events carry the change-event fields OpenFlow clients read.
    assert inserted["result"]["fullDocument"]["_id"] == "for-nobody"
    assert inserted["result"]["ns"]["coll"] == C
    assert updated["result"]["updateDescription"]["updatedFields"]["n"] == 1
    assert replaced["result"]["fullDocument"]["n"] == 2
    assert deleted["result"]["documentKey"] == {"_id": "for-nobody"}
    assert "fullDocument" not in deleted["result"]
    assert {e["id"] for e in got_alice} <= ids and len({e["id"] for e in got_alice}) == 1
    assert isinstance(got_alice[0]["result"]["fullDocument"]["_created"], str)  # ISO date


async def test_an_acl_change_moves_the_events_and_the_delete_follows_the_last_version(
    admin: JsonClient, alice: JsonClient, bob: JsonClient
) -> None:
    a, b = alice.user["_id"], bob.user["_id"]
    for client in (admin, alice, bob):
        await watch(client)
    await admin.call("insertone", collectionname=C, item={"_id": "moving", "_acl": acl(a)})
    await seen_by_admin(admin, "insert", "moving")
    await admin.call("updateone", collectionname=C, item={"_id": "moving", "_acl": acl(b)})
    await seen_by_admin(admin, "replace", "moving")
    await admin.call("deleteone", collectionname=C, id="moving")
    await seen_by_admin(admin, "delete", "moving")
    assert brief(await drain(alice)) == [("insert", "moving")]
    assert brief(await drain(bob)) == [("replace", "moving"), ("delete", "moving")]


async def test_deletes_of_documents_older_than_the_stream_use_pre_images_where_kept(
    admin: JsonClient, alice: JsonClient
) -> None:
    a = alice.user["_id"]
    await admin.call(
        "createcollection", collectionname="withpre", changeStreamPreAndPostImages={"enabled": True}
    )
    for collection in ("withpre", C):
        await admin.call(
            "insertone", collectionname=collection, item={"_id": "old", "_acl": acl(a)}
        )
    # The stream opens with the first watch: it has never seen the documents above.
    for client in (admin, alice):
        await watch(client, "withpre")
        await watch(client, C)
    for collection in ("withpre", C):
        await admin.call("deleteone", collectionname=collection, id="old")
        await seen_by_admin(admin, "delete", "old")
    got = await drain(alice)
    # With pre-images the delete is checked against the document as it was; without them, and
    # with no version seen by this server, nobody but admins can be shown to have read it.
    assert [(e["result"]["ns"]["coll"], e["result"]["operationType"]) for e in got] == [
        ("withpre", "delete")
    ]


async def test_only_watched_collections_are_remembered_for_deletes(
    admin: JsonClient, kept: _KeepPlatform
) -> None:
    hub = hub_for(kept.platform)
    await watch(admin)
    await admin.call("insertone", collectionname="unwatched", item={"_id": "u"})
    await admin.call("insertone", collectionname=C, item={"_id": "w"})
    await seen_by_admin(admin, "insert", "w")
    await admin.call("updateone", collectionname=C, query={"_id": "w"}, item={"$set": {"n": 1}})
    await seen_by_admin(admin, "update", "w")  # this update also wrote watched_hist
    assert hub.last_versions.keys() == [(C, "w")]
    await admin.call("deleteone", collectionname=C, id="w")
    await seen_by_admin(admin, "delete", "w")
    assert len(hub.last_versions) == 0


async def test_users_events_never_carry_passwordhash(
    admin: JsonClient, alice: JsonClient, bob: JsonClient, mongo_storage: dict[str, Any]
) -> None:
    a = alice.user["_id"]
    await watch(admin, "users")
    await watch(alice, "users")
    me = (await alice.call("query", collectionname="users", query={"_id": a}))["result"][0]
    await alice.call("updateone", collectionname="users", item={**me, "newpassword": "changed"})
    await seen_by_admin(admin, "replace", a)
    await admin.call(
        "updateone", collectionname="users", query={"_id": a}, item={"$set": {"name": "Alice"}}
    )
    await seen_by_admin(admin, "update", a)
    await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": "carol", "newpassword": "pw"},
    )
    carol = (await next_event(admin))["result"]["documentKey"]["_id"]
    # Written straight to the store, around the data layer's rules.
    async with AsyncMongoClient(mongo_storage["url"]) as direct:
        users = direct[mongo_storage["database"]]["users"]
        await users.update_one(
            {"_id": a}, {"$set": {"passwordhash": "x", "nested.passwordhash": 1}}
        )
        await seen_by_admin(admin, "update", a)
        await users.update_one({"_id": a}, {"$unset": {"passwordhash": ""}})
        await seen_by_admin(admin, "update", a)

    got = await drain(alice)
    # Alice sees changes of her own document only; nothing carries the hash, in any field.
    assert brief(got) == [("replace", a), ("update", a), ("update", a), ("update", a)]
    assert carol != a
    text = json.dumps(got)
    assert "passwordhash" not in text
    assert got[0]["result"]["fullDocument"]["username"] == "alice"
    assert got[1]["result"]["updateDescription"]["updatedFields"]["name"] == "Alice"
    assert got[3]["result"]["updateDescription"]["removedFields"] == []


async def test_admins_watching_everything_also_get_the_collection_dropped(
    admin: JsonClient, alice: JsonClient
) -> None:
    await admin.call(
        "insertone", collectionname=C, item={"_id": "x", "_acl": acl(alice.user["_id"])}
    )
    everything = await watch(admin)
    await watch(admin, paths=["$.a._id"])
    await watch(alice)
    await admin.call("dropcollection", collectionname=C)
    event = await next_event(admin)
    assert event["id"] == everything
    assert event["result"]["operationType"] == "drop"
    assert event["result"]["ns"]["coll"] == C
    assert await drain(admin) == []
    assert await drain(alice) == []


# -- what a watch selects ---------------------------------------------------------------------


async def test_jsonpath_paths_select_events(admin: JsonClient, alice: JsonClient) -> None:
    a = alice.user["_id"]
    by_type = await watch(alice, paths=["$.[?(@._type == 'important')]"])
    by_field = await watch(alice, paths=["$.a.priority"])
    by_either = await watch(alice, paths=["$[?(@.n > 5)]", "$.a.tags[?(@ == 'red')]"])
    everything = await watch(admin)
    items = [
        {"_id": "d1", "_type": "important"},
        {"_id": "d2", "_type": "other", "priority": 1},
        {"_id": "d3", "_type": "Important", "n": 9},  # _type is stored lower-cased
        {"_id": "d4", "n": 2, "tags": ["blue", "red"]},
        {"_id": "d5", "n": 2, "tags": ["blue"]},
    ]
    for item in items:
        await admin.call("insertone", collectionname=C, item={**item, "_acl": acl(a)})
        event = await seen_by_admin(admin, "insert", str(item["_id"]))
        assert event["id"] == everything
    got: dict[str, list[str]] = {}
    for event in await drain(alice):
        got.setdefault(event["id"], []).append(event["result"]["documentKey"]["_id"])
    assert got == {by_type: ["d1", "d3"], by_field: ["d2"], by_either: ["d3", "d4"]}


async def test_legacy_match_compares_values(admin: JsonClient, alice: JsonClient) -> None:
    a = alice.user["_id"]
    open_and_urgent = await watch(
        alice, aggregates=[{"$match": {"status": "open", "priority": {"$gte": 5}}}]
    )
    nested_in = await watch(
        alice,
        aggregates=json.dumps(
            [{"$match": {"meta.team": {"$in": ["x", "y"]}, "gone": {"$exists": False}}}]
        ),
    )
    dated = await watch(alice, paths=[{"$match": {"due": {"$lt": "2030-01-01T00:00:00Z"}}}])
    await watch(admin)
    items = [
        {"_id": "m1", "status": "open", "priority": 7},
        {"_id": "m2", "status": "closed", "priority": 9},  # OpenFlow would send this one too
        {"_id": "m3", "status": "open", "priority": 1},
        {"_id": "m4", "status": "open"},
        {"_id": "m5", "meta": {"team": "y"}},
        {"_id": "m6", "meta": {"team": "y"}, "gone": None},
        {"_id": "m7", "meta": {"team": "z"}, "due": "2029-05-01T00:00:00Z"},
        {"_id": "m8", "due": "2031-05-01T00:00:00Z"},
    ]
    for item in items:
        await admin.call("insertone", collectionname=C, item={**item, "_acl": acl(a)})
        await seen_by_admin(admin, "insert", str(item["_id"]))
    got: dict[str, list[str]] = {}
    for event in await drain(alice):
        got.setdefault(event["id"], []).append(event["result"]["documentKey"]["_id"])
    assert got == {open_and_urgent: ["m1"], nested_in: ["m5"], dated: ["m7"]}


# -- lifetime ---------------------------------------------------------------------------------


async def test_unwatch_stops_events_and_only_works_on_own_watches(
    admin: JsonClient, alice: JsonClient, bob: JsonClient
) -> None:
    a, b = alice.user["_id"], bob.user["_id"]
    await watch(admin)
    mine = await watch(alice)
    theirs = await watch(bob)
    await admin.call("insertone", collectionname=C, item={"_id": "u1", "_acl": acl(a, b)})
    await seen_by_admin(admin, "insert", "u1")
    assert "no watch" in await refused(alice, "unwatch", id=theirs)
    assert "no watch" in await refused(alice, "unwatch", id="000000000000000000000000")
    assert "is required" in await refused(alice, "unwatch")
    assert await alice.call("unwatch", id=mine)
    assert "no watch" in await refused(alice, "unwatch", id=mine)  # gone
    await admin.call("insertone", collectionname=C, item={"_id": "u2", "_acl": acl(a, b)})
    await seen_by_admin(admin, "insert", "u2")
    assert brief(await drain(alice)) == [("insert", "u1")]
    assert brief(await drain(bob)) == [("insert", "u1"), ("insert", "u2")]


async def test_watches_end_when_the_socket_closes(
    admin: JsonClient, alice: JsonClient, make_user: MakeUser, kept: _KeepPlatform
) -> None:
    hub = hub_for(kept.platform)
    await watch(admin)
    await watch(alice)
    await watch(alice, paths=["$.a.x"])
    assert len(hub.watches) == 3
    await alice.close()
    for _ in range(100):
        if len(hub.watches) == 1:
            break
        await asyncio.sleep(0.02)
    assert [w.session.principal.username for w in hub.watches.values()] == ["admin"]
    # The stream keeps serving the others.
    await admin.call("insertone", collectionname=C, item={"_id": "after"})
    await seen_by_admin(admin, "insert", "after")


async def test_a_connection_that_stops_reading_is_closed_not_buffered_without_end(
    server: str, admin: JsonClient, alice: JsonClient, kept: _KeepPlatform
) -> None:
    hub = hub_for(kept.platform)
    hub.outbox_limit = 4  # instead of 10 000, so that a few events overflow it
    # A client with a small receive buffer that stops reading after its watch is in place.
    host, port = server.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((host, int(port)))
    slow = await websockets.connect(
        server, sock=sock, max_queue=1, compression=None, close_timeout=0.5
    )
    try:
        for number, (command, data) in enumerate(
            [("signin", {"jwt": alice.jwt}), ("watch", {"collectionname": C})]
        ):
            frame = {"id": str(number), "command": command, "data": json.dumps(data)}
            await slow.send(json.dumps(frame))
            while json.loads(await slow.recv()).get("replyto") != str(number):
                pass
        await watch(admin)
        assert len(hub.watches) == 2
        big = "x" * 50_000
        item = {"big": big, "_acl": acl(alice.user["_id"])}
        for i in range(100):
            await admin.call("insertone", collectionname=C, item={**item, "_id": f"b{i}"})
            await seen_by_admin(admin, "insert", f"b{i}")
            if len(hub.watches) == 1:
                break
        assert [w.session.principal.username for w in hub.watches.values()] == ["admin"]
        # The others are not held up.
        await admin.call("insertone", collectionname=C, item={"_id": "after"})
        await seen_by_admin(admin, "insert", "after")
    finally:
        await slow.close()


async def test_signing_in_as_someone_else_stops_the_earlier_users_watches(
    admin: JsonClient, alice: JsonClient, bob: JsonClient
) -> None:
    a, b = alice.user["_id"], bob.user["_id"]
    await watch(admin)
    await watch(alice)
    await alice.signin("bob", "secret")  # the same socket, now bob
    await admin.call("insertone", collectionname=C, item={"_id": "s1", "_acl": acl(a, b)})
    await seen_by_admin(admin, "insert", "s1")
    assert await drain(alice) == []


async def test_answers_to_watchevent_pushes_are_ignored(admin: JsonClient) -> None:
    await watch(admin)
    await admin.call("insertone", collectionname=C, item={"_id": "answered"})
    await next_event(admin)
    # OpenFlow clients answer pushes: a frame with the push's command and replyto.
    await admin.send_frame({"id": "a1", "replyto": "x", "command": "watchevent", "data": "{}"})
    assert await admin.request("ping", {}) == ("pong", {})
    assert admin.pushes.empty()


# -- refusals ------------------------------------------------------------------------------------


async def test_bad_watch_requests_get_clear_errors(
    admin: JsonClient, alice: JsonClient, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    assert "collectionname" in await refused(alice, "watch")
    assert "not a valid collection name" in await refused(
        alice, "watch", collectionname="system.users"
    )
    message = await refused(alice, "watch", collectionname=C, paths=["$.[?(@._type == "])
    assert "not valid JSONPath" in message and "paths[0]" in message
    assert "not valid JSONPath" in await refused(alice, "watch", collectionname=C, paths="foo bar")
    assert "JSONPath" in await refused(alice, "watch", collectionname=C, paths=[5])
    assert "list of JSONPath" in await refused(alice, "watch", collectionname=C, paths=5)
    message = await refused(
        alice, "watch", collectionname=C, aggregates=[{"$group": {"_id": "$x"}}]
    )
    assert "only" in message and "$match" in message and "$group" in message
    message = await refused(
        alice, "watch", collectionname=C, aggregates=[{"$match": {"a": {"$where": "1"}}}]
    )
    assert "$where is not supported" in message
    assert "$expr is not supported" in await refused(
        alice, "watch", collectionname=C, aggregates=[{"$match": {"$expr": {"$eq": [1, 1]}}}]
    )
    assert "not valid JSON" in await refused(alice, "watch", collectionname=C, aggregates="[{")
    # Collections a user may not watch; admins may.
    assert "only admins can watch 'audit'" in await refused(alice, "watch", collectionname="audit")
    assert "only admins" in await refused(alice, "watch", collectionname="fs.chunks")
    await watch(admin, "audit")
    # Watches need a signed-in connection: the events go to its user.
    anonymous = await connect()
    assert "Not signed in" in await refused(anonymous, "watch", collectionname=C)
    message = await refused(anonymous, "watch", collectionname=C, jwt=alice.jwt)
    assert "sign the connection in" in message
    message = await refused(admin, "watch", collectionname=C, jwt=alice.jwt)
    assert "another user" in message
    # The connection keeps working.
    assert await watch(alice)


async def test_supports_watch_is_advertised_while_the_watch_plugin_is_loaded(
    tmp_path: Path, mongo_storage: dict[str, Any], server: str
) -> None:
    http = server.replace("ws://", "http://").removesuffix("/ws")
    async with httpx.AsyncClient() as client:
        assert (await client.get(http + "/config")).json()["supports_watch"] is True
    config = make_test_config(
        tmp_path / "blocked", mongo_storage, plugins={"blocked": ["iapflow.builtin.watch"]}
    )
    async with running_server(config) as base, JsonClient(base + "/ws") as client:
        reply = await client.signin("admin", "admin")
        assert reply["supports_watch"] is False
        assert "Unknown command" in await refused(client, "watch", collectionname=C)


# -- the filters on their own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "doc", "expected"),
    [
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {"a": "1"}, False),
        ({"a": 1}, {"a": [0, 1]}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": None}, {}, True),
        ({"a": None}, {"a": 0}, False),
        ({"a.b": 2}, {"a": {"b": 2}}, True),
        ({"a.b": 2}, {"a": [{"b": 1}, {"b": 2}]}, True),
        ({"a.1": "y"}, {"a": ["x", "y"]}, True),
        ({"a": {"$ne": 1}}, {}, True),
        ({"a": {"$ne": 1}}, {"a": [1, 2]}, False),
        ({"a": {"$gt": 1, "$lt": 5}}, {"a": 3}, True),
        ({"a": {"$gt": 1, "$lt": 5}}, {"a": 5}, False),
        ({"a": {"$gte": "b"}}, {"a": "c"}, True),
        ({"a": {"$gte": "b"}}, {"a": 9}, False),
        ({"a": {"$lte": 2}}, {"a": [5, 1]}, True),
        ({"a": {"$in": [1, 2]}}, {"a": 2}, True),
        ({"a": {"$in": [None]}}, {}, True),
        ({"a": {"$nin": [1, 2]}}, {"a": 3}, True),
        ({"a": {"$exists": True}}, {"a": None}, True),
        ({"a": {"$exists": False}}, {"a": None}, False),
        ({"a": {"$eq": {"b": 1}}}, {"a": {"b": 1}}, True),
        ({"$or": [{"a": 1}, {"b": 1}]}, {"b": 1}, True),
        ({"$and": [{"a": 1}, {"b": 1}]}, {"b": 1}, False),
        ({"$nor": [{"a": 1}]}, {"a": 2}, True),
        ({"a": re.compile("^x")}, {"a": "xy"}, True),
        (
            {"d": {"$lt": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}},
            {"d": dt.datetime(2029, 1, 1, tzinfo=dt.UTC)},
            True,
        ),
    ],
)
def test_match_evaluator(query: dict[str, Any], doc: dict[str, Any], expected: bool) -> None:
    assert compile_match(query)(doc) is expected


@pytest.mark.parametrize(
    "query",
    [
        {"a": {"$regex": "x"}},
        {"$where": "1"},
        {"a": {"$elemMatch": {}}},
        {"$or": []},
        {"a": {"b": {"$gt": 1}}},
        [],
    ],
)
def test_match_evaluator_refuses_what_it_does_not_know(query: Any) -> None:
    with pytest.raises(ApiError):
        compile_match(query)


def test_jsonpath_plus_spelling_is_accepted() -> None:
    assert normalise_jsonpath("$.[?(@.a == '.[x')]") == "$[?(@.a == '.[x')]"
    assert normalise_jsonpath("$..[0]") == "$..[0]"
    selection = parse_watch_filter("$.[?(@.n > 1)]", None)
    assert selection.passes({"n": 2}, {"n": 2}) and not selection.passes({"n": 0}, {"n": 0})
    assert not selection.passes({"n": "x"}, {"n": "x"})  # a type mismatch is no hit
    assert parse_watch_filter(None, []).everything


# -- the store going away -------------------------------------------------------------------------


@pytest.mark.slow
async def test_killing_and_restarting_the_store_loses_no_event_and_repeats_none(
    tmp_path: Path,
) -> None:
    total, killed_at, restarted = 120, 40, 10
    store = EmbeddedServer(str(tmp_path / "store"), sync_on_commit=True, port=free_port())
    store.start()
    try:
        storage = {
            "backend": "mongo",
            "url": store.uri,
            "database": "crash",
            "server_selection_timeout_ms": 1000,
        }
        config = make_test_config(tmp_path / "data", storage)
        async with (
            running_server(config) as base,
            JsonClient(base + "/ws") as admin,
            JsonClient(base + "/ws") as alice,
            AsyncMongoClient(store.uri, serverSelectionTimeoutMS=500) as writer,
        ):
            await admin.signin("admin", "admin")
            await admin.call(
                "insertone",
                collectionname="users",
                item={"_type": "user", "username": "alice", "newpassword": "pw"},
            )
            await alice.signin("alice", "pw")
            a = alice.user["_id"]
            await watch(admin)
            await watch(alice)
            documents = writer["crash"][C]
            written = asyncio.Event()

            async def write_all() -> None:
                """Every document exactly once: a failed write is retried until it is stored,
                and a duplicate key means an earlier attempt did reach the store."""
                for seq in range(total):
                    doc = {
                        "_id": f"d{seq:04}",
                        "seq": seq,
                        "_acl": acl(a, wellknown.ADMINS) if seq % 2 == 0 else acl(wellknown.ADMINS),
                    }
                    while True:
                        try:
                            await documents.insert_one(doc)
                            break
                        except DuplicateKeyError:
                            break
                        except PyMongoError:
                            await asyncio.sleep(0.1)
                    if seq == killed_at:
                        written.set()
                    await asyncio.sleep(0.01)

            writing = asyncio.get_running_loop().create_task(write_all())
            await written.wait()
            store.process.kill()  # SIGKILL, mid-stream: the writer is still writing
            store.process.wait()
            await asyncio.sleep(3)  # longer than the server's 1 s server selection timeout
            store.start()  # same path, same port
            # Written before this event loop runs again, so before the server's stream is back.
            with MongoClient(store.uri) as blocking:
                blocking["crash"][C].insert_many(
                    [
                        {"_id": f"r{i}", "_acl": acl(a) if i % 2 == 0 else []}
                        for i in range(restarted)
                    ]
                )
            await asyncio.wait_for(writing, 120)

            expected = total + restarted
            got_admin: list[str] = []
            while len(got_admin) < expected:
                event = await next_event(admin, 60)
                got_admin.append(event["result"]["documentKey"]["_id"])
            got_admin += [e["result"]["documentKey"]["_id"] for e in await drain(admin, 1.0)]
            got_alice = [e["result"]["documentKey"]["_id"] for e in await drain(alice, 1.0)]

        def in_order(got: list[str], everything: list[str]) -> None:
            """Each document exactly once, each writer's documents in the order written."""
            assert sorted(got) == sorted(everything)  # none lost, none twice
            for prefix in ("d", "r"):
                mine = [doc for doc in got if doc.startswith(prefix)]
                assert mine == sorted(mine)

        written_docs = [f"d{seq:04}" for seq in range(total)]
        restart_docs = [f"r{i}" for i in range(restarted)]
        in_order(got_admin, written_docs + restart_docs)
        in_order(got_alice, written_docs[::2] + restart_docs[::2])
        # The batch written while the server's stream was down came after what was written
        # before the kill and before what the writer wrote next.
        assert got_admin.index("r0") > got_admin.index(f"d{killed_at:04}")
    finally:
        store.stop()
