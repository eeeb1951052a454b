"""Document history against the real server and store: every version of a document edited by
replace and by operator updates reads back exactly, deleted documents are listed and restored
by those with the right (and nobody else), unchanged writes leave no trace, snapshots every N
versions, skipped collections, password hashes kept out, and bad input refused clearly."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from iapflow.testing import JsonClient, ReplyError

C = "entities"
READ, UPDATE, DELETE = 2, 4, 8
MakeUser = Callable[..., Awaitable[JsonClient]]


def exact(doc: Any) -> str:
    """JSON text that tells 1, 1.0 and true apart and ignores key order."""
    return json.dumps(doc, sort_keys=True)


async def current(client: JsonClient, doc_id: str, collection: str = C) -> dict[str, Any]:
    found = await client.call("query", collectionname=collection, query={"_id": doc_id})
    assert len(found["result"]) == 1
    return found["result"][0]  # type: ignore[no-any-return]


async def version(
    client: JsonClient, doc_id: str, number: Any, collection: str = C
) -> dict[str, Any]:
    reply = await client.call(
        "getdocumentversion", collectionname=collection, id=doc_id, version=number
    )
    return reply["result"]  # type: ignore[no-any-return]


async def history(admin: JsonClient, doc_id: str, collection: str = C) -> list[dict[str, Any]]:
    """The history records of ``doc_id``, oldest first (read as admin)."""
    reply = await admin.call(
        "query",
        collectionname=collection + "_hist",
        query={"id": doc_id},
        orderby={"_version": 1},
        top=1000,
    )
    return reply["result"]  # type: ignore[no-any-return]


async def collections(admin: JsonClient) -> set[str]:
    reply = await admin.call("listcollections", includehist=True)
    return {c["name"] for c in reply["result"]}


async def deleted(client: JsonClient, collection: str = C, **extra: Any) -> list[dict[str, Any]]:
    reply = await client.call("getdeleteddocuments", collectionname=collection, **extra)
    return reply["result"]  # type: ignore[no-any-return]


async def edit_five_times(client: JsonClient) -> list[dict[str, Any]]:
    """A document and five edits of it, mixing replace and operator updates; returns every
    version as read back after the edit that made it."""
    first = await client.call(
        "insertone",
        collectionname=C,
        item={
            "name": "order",
            "_type": "order",
            "customer": {"name": "Ann", "address": {"city": "Oslo", "zip": "0150"}},
            "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
            "tags": ["new", "web"],
            "note": "call first",
            "flags": [True, 1, 1.5, None, ""],
        },
    )
    doc_id = first["result"]["_id"]
    versions = [await current(client, doc_id)]

    # 1: replace, changing nested values, growing an array and dropping a field.
    doc = dict(versions[-1])
    doc["customer"] = {"name": "Ann", "address": {"city": "Bergen", "zip": "5003"}}
    doc["lines"] = [*doc["lines"], {"sku": "c", "qty": 3}]
    del doc["note"]
    await client.call("updateone", collectionname=C, item=doc)
    versions.append(await current(client, doc_id))

    # 2: operator update on a nested field, an array and a removed field.
    await client.call(
        "updateone",
        collectionname=C,
        query={"_id": doc_id},
        item={
            "$set": {"customer.address.city": "Trondheim", "lines.0.qty": 10},
            "$pull": {"tags": "new"},
            "$unset": {"flags": ""},
            "$inc": {"total": 42},
        },
    )
    versions.append(await current(client, doc_id))

    # 3: replace with a reason: a type change, a removed array element, a new nested object.
    doc = dict(versions[-1])
    doc["lines"] = [doc["lines"][0], doc["lines"][2]]
    doc["total"] = 42.5
    doc["customer"] = {**doc["customer"], "phones": [["+47", "1"], []]}
    doc["_updatereason"] = "customer called"
    await client.call("updateone", collectionname=C, item=doc)
    versions.append(await current(client, doc_id))

    # 4: updatemany pushing to an array and renaming a field.
    reply = await client.call(
        "updatemany",
        collectionname=C,
        query={"name": "order"},
        item={"$push": {"tags": {"$each": ["vip", "vip"]}}, "$rename": {"total": "sum"}},
    )
    assert reply["opresult"] == {"matchedCount": 1, "modifiedCount": 1}
    versions.append(await current(client, doc_id))

    # 5: operator update by query on a field other than _id, emptying things.
    await client.call(
        "updateone",
        collectionname=C,
        query={"customer.name": "Ann"},
        item={"$set": {"lines": [], "customer.address": {}, "tags": None}},
    )
    versions.append(await current(client, doc_id))
    return versions


async def test_a_document_edited_five_times_reads_back_as_each_version(
    make_user: MakeUser, admin: JsonClient
) -> None:
    alice = await make_user()
    versions = await edit_five_times(alice)
    doc_id = versions[0]["_id"]
    assert [v["_version"] for v in versions] == [0, 1, 2, 3, 4, 5]
    for number, expected in enumerate(versions):
        assert exact(await version(alice, doc_id, number)) == exact(expected), number
    # The history: a full copy of version 0, then one delta per version; the reason is kept.
    records = await history(admin, doc_id)
    assert [r["_version"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert "item" in records[0] and all("delta" in r for r in records[1:])
    assert records[3]["reason"] == "customer called"
    assert all("_updatereason" not in v for v in versions)
    assert records[2]["_modifiedbyid"] == alice.user["_id"]
    assert records[5]["_acl"] == versions[5]["_acl"]
    assert {"op": "unset", "path": ["note"]} in records[1]["delta"]


async def test_history_records_follow_the_documents_acl(make_user: MakeUser) -> None:
    alice, bob = await make_user(), await make_user()
    versions = await edit_five_times(alice)
    doc_id = versions[0]["_id"]
    own = await alice.call("query", collectionname=C + "_hist", query={"id": doc_id})
    assert len(own["result"]) == 6
    theirs = await bob.call("query", collectionname=C + "_hist", query={"id": doc_id})
    assert theirs["result"] == []
    with pytest.raises(ReplyError, match="not found in entities, or you lack read right"):
        await version(bob, doc_id, 1)


async def test_unchanged_writes_leave_no_version_and_no_history(admin: JsonClient) -> None:
    doc = (
        await admin.call("insertone", collectionname=C, item={"name": "same", "n": 1, "l": [1]})
    )["result"]
    again = await admin.call("updateone", collectionname=C, item=doc)
    assert again["result"]["_version"] == 0
    noop = await admin.call(
        "updateone", collectionname=C, query={"_id": doc["_id"]}, item={"$set": {"n": 1}}
    )
    assert noop["result"]["_version"] == 0
    many = await admin.call(
        "updatemany", collectionname=C, query={"name": "same"}, item={"$addToSet": {"l": 1}}
    )
    assert many["opresult"] == {"matchedCount": 1, "modifiedCount": 0}
    stored = await current(admin, doc["_id"])
    assert stored["_version"] == 0 and stored["_modified"] == doc["_modified"]
    assert await history(admin, doc["_id"]) == []
    # A real change: a copy of version 0 and the delta of version 1. 1 -> true is a change.
    changed = await admin.call(
        "updateone", collectionname=C, query={"_id": doc["_id"]}, item={"$set": {"n": True}}
    )
    assert changed["result"]["_version"] == 1 and changed["result"]["n"] is True
    assert [r["_version"] for r in await history(admin, doc["_id"])] == [0, 1]
    assert (await version(admin, doc["_id"], 0))["n"] == 1


async def test_updatemany_records_each_changed_document(admin: JsonClient) -> None:
    items = [
        {"name": f"d{i}", "group": "g", "state": "done" if i % 2 else "open"} for i in range(7)
    ]
    docs = (await admin.call("insertmany", collectionname=C, items=items))["results"]
    reply = await admin.call(
        "updatemany", collectionname=C, query={"group": "g"}, item={"$set": {"state": "done"}}
    )
    assert reply["opresult"] == {"matchedCount": 7, "modifiedCount": 4}
    for doc in docs:
        now = await current(admin, doc["_id"])
        if doc["state"] == "open":
            assert now["_version"] == 1
            assert exact(await version(admin, doc["_id"], 0)) == exact(doc)
            assert len(await history(admin, doc["_id"])) == 2
        else:
            assert now["_version"] == 0 and await history(admin, doc["_id"]) == []


async def test_concurrent_operator_updates_each_get_their_own_version(
    admin: JsonClient, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    doc = (await admin.call("insertone", collectionname=C, item={"name": "c", "n": 0}))["result"]
    clients = [await connect() for _ in range(6)]
    for client in clients:
        await client.signin("admin", "admin")

    async def bump(client: JsonClient) -> None:
        for _ in range(3):
            await client.call(
                "updateone", collectionname=C, query={"_id": doc["_id"]}, item={"$inc": {"n": 1}}
            )

    await asyncio.gather(*(bump(c) for c in clients))
    assert (await current(admin, doc["_id"]))["n"] == 18
    for number in range(19):
        rebuilt = await version(admin, doc["_id"], number)
        assert rebuilt["n"] == number and rebuilt["_version"] == number


async def test_deleted_document_is_listed_and_restored_by_its_owner_not_a_stranger(
    make_user: MakeUser, admin: JsonClient
) -> None:
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    item = {
        "name": "precious",
        "data": {"k": [1, 2]},
        "_acl": [{"_id": carol.user["_id"], "name": "carol", "rights": READ}],
    }
    doc = (await alice.call("insertone", collectionname=C, item=item))["result"]
    doc = (await alice.call("updateone", collectionname=C, item={**doc, "data": {"k": [3]}}))[
        "result"
    ]
    before_delete = await current(alice, doc["_id"])
    await alice.call("deleteone", collectionname=C, id=doc["_id"])

    listed = await deleted(alice)
    assert [d["_id"] for d in listed] == [doc["_id"]]
    assert listed[0]["_deletedby"] == alice.user["name"]
    assert listed[0]["_deletedbyid"] == alice.user["_id"] and listed[0]["_deleted"].endswith("Z")
    assert exact({k: v for k, v in listed[0].items() if not k.startswith("_deleted")}) == exact(
        before_delete
    )
    # The owner and a reader can still read every version of the deleted document.
    assert (await version(alice, doc["_id"], 0))["data"] == {"k": [1, 2]}
    assert exact(await version(carol, doc["_id"], 1)) == exact(before_delete)
    with pytest.raises(ReplyError, match="does not exist; the last is 1"):
        await version(alice, doc["_id"], 2)

    # A stranger sees nothing, reads nothing and restores nothing.
    assert await deleted(bob) == []
    hist = await bob.call("query", collectionname=C + "_hist", query={})
    assert hist["result"] == []
    with pytest.raises(ReplyError, match="not found in entities, or you lack read right"):
        await version(bob, doc["_id"], 0)
    with pytest.raises(ReplyError, match=f"no deleted document {doc['_id']} in entities"):
        await bob.call("restoredocument", collectionname=C, id=doc["_id"])
    # A reader may list it but not restore it.
    assert [d["_id"] for d in await deleted(carol)] == [doc["_id"]]
    with pytest.raises(ReplyError, match="needs update or delete right"):
        await carol.call("restoredocument", collectionname=C, id=doc["_id"])
    with pytest.raises(ReplyError, match="history, written by the server"):
        await alice.call("deletemany", collectionname=C + "_hist", query={})

    restored = (await alice.call("restoredocument", collectionname=C, id=doc["_id"]))["result"]
    assert restored["_id"] == doc["_id"] and restored["_version"] == 2
    assert restored["_acl"] == before_delete["_acl"]
    assert restored["_created"] == before_delete["_created"]
    assert restored["_modifiedbyid"] == alice.user["_id"]
    assert exact(await current(alice, doc["_id"])) == exact(restored)
    assert (await current(carol, doc["_id"]))["data"] == {"k": [3]}
    assert await deleted(alice) == []
    records = await history(admin, doc["_id"])
    assert [r["_version"] for r in records] == [0, 1, 1, 2]
    assert records[-1]["reason"] == "restored"
    for number in range(2):
        rebuilt = await version(alice, doc["_id"], number)
        assert rebuilt["_version"] == number
    assert exact(await version(alice, doc["_id"], 1)) == exact(before_delete)
    with pytest.raises(ReplyError, match="no deleted document"):
        await alice.call("restoredocument", collectionname=C, id=doc["_id"])

    # Deleted again, it can be restored again; deletemany keeps copies too.
    await alice.call("deletemany", collectionname=C, query={"name": "precious"})
    assert [d["_version"] for d in await deleted(alice)] == [2]
    again = (await alice.call("restoredocument", collectionname=C, id=doc["_id"]))["result"]
    assert again["_version"] == 3


async def test_restore_over_a_new_document_with_the_same_id_is_refused(
    admin: JsonClient,
) -> None:
    await admin.call("insertone", collectionname=C, item={"_id": "fixed-id", "name": "one"})
    await admin.call("deleteone", collectionname=C, id="fixed-id")
    await admin.call("insertone", collectionname=C, item={"_id": "fixed-id", "name": "two"})
    with pytest.raises(ReplyError, match="cannot restore fixed-id: duplicate key"):
        await admin.call("restoredocument", collectionname=C, id="fixed-id")
    # The new document's history is its own, not the deleted one's.
    await admin.call("updateone", collectionname=C, item={"_id": "fixed-id", "name": "three"})
    assert (await version(admin, "fixed-id", 0))["name"] == "two"


async def test_deletemany_keeps_a_copy_of_every_document(admin: JsonClient) -> None:
    items = [{"name": f"bulk{i}", "kind": "bulk"} for i in range(12)]
    await admin.call("insertmany", collectionname=C, items=items)
    reply = await admin.call("deletemany", collectionname=C, query={"kind": "bulk"})
    assert reply["affectedrows"] == 12
    listed = await deleted(admin, top=5)
    assert len(listed) == 5
    everything = await deleted(admin, top=100)
    assert sorted(d["name"] for d in everything) == sorted(i["name"] for i in items)
    assert len(await deleted(admin, top=100, skip=10)) == 2


async def test_users_history_never_holds_a_password_hash(admin: JsonClient) -> None:
    user = (
        await admin.call(
            "insertone",
            collectionname="users",
            item={"_type": "user", "username": "hist", "newpassword": "one"},
        )
    )["result"]
    await admin.call(
        "updateone", collectionname="users", item={**user, "newpassword": "two", "title": "x"}
    )
    await admin.call("updateone", collectionname="users", item={**user, "newpassword": "three"})
    await admin.call("deleteone", collectionname="users", id=user["_id"])
    records = await history(admin, user["_id"], "users")
    assert [r["_version"] for r in records] == [0, 1, 2, 2]
    assert "passwordhash" not in json.dumps(records)
    assert "passwordhash" not in json.dumps(await version(admin, user["_id"], 1, "users"))
    listed = await deleted(admin, "users")
    assert [d["username"] for d in listed] == ["hist"] and "passwordhash" not in listed[0]


async def test_history_collections_cannot_be_written_by_users(make_user: MakeUser) -> None:
    alice = await make_user()
    doc = (await alice.call("insertone", collectionname=C, item={"name": "x"}))["result"]
    await alice.call("updateone", collectionname=C, item={**doc, "name": "y"})
    records = (await alice.call("query", collectionname=C + "_hist", query={}))["result"]
    assert len(records) == 2
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("insertone", {"item": {"id": doc["_id"], "_version": 7}}),
        ("updateone", {"item": {**records[0], "item": {}}}),
        ("updateone", {"query": {"id": doc["_id"]}, "item": {"$set": {"delta": []}}}),
        ("updatemany", {"query": {}, "item": {"$set": {"delta": []}}}),
        ("deleteone", {"id": records[1]["_id"]}),
    ]
    for command, data in attempts:
        with pytest.raises(ReplyError, match="history, written by the server"):
            await alice.call(command, collectionname=C + "_hist", **data)
    assert (await version(alice, doc["_id"], 0))["name"] == "x"


async def test_history_imported_from_openflow_restarts_from_a_snapshot(
    admin: JsonClient, mongo_storage: dict[str, str]
) -> None:
    # A document at version 2 with OpenFlow's history: a copy of version 0, jsondiffpatch deltas.
    created = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    doc = {"_id": "from-openflow", "name": "c", "_type": "test", "_version": 2}
    doc.update(_created=created, _modified=created, _acl=[])
    records = [
        {
            "_id": "r0",
            "id": doc["_id"],
            "_version": 0,
            "_created": created,
            "item": {**doc, "name": "a", "_version": 0},
        },
        {
            "_id": "r1",
            "id": doc["_id"],
            "_version": 1,
            "_created": created,
            "delta": {"name": ["a", "b"]},
        },
        {
            "_id": "r2",
            "id": doc["_id"],
            "_version": 2,
            "_created": created,
            "delta": {"name": ["b", "c"]},
        },
    ]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_storage["url"])
    try:
        database = client[mongo_storage["database"]]
        await database[C].insert_one(doc)
        await database[C + "_hist"].insert_many(records)
    finally:
        await client.close()
    assert (await version(admin, doc["_id"], 0))["name"] == "a"
    with pytest.raises(ReplyError, match="delta in another format"):
        await version(admin, doc["_id"], 1)
    await admin.call(
        "updateone", collectionname=C, query={"_id": doc["_id"]}, item={"$set": {"name": "d"}}
    )
    await admin.call(
        "updateone", collectionname=C, query={"_id": doc["_id"]}, item={"$set": {"name": "e"}}
    )
    assert [(await version(admin, doc["_id"], n))["name"] for n in (0, 2, 3, 4)] == list("acde")
    assert (await version(admin, doc["_id"], 2))["_modified"] == "2024-05-01T12:00:00.000Z"


async def test_history_index_is_ensured(admin: JsonClient) -> None:
    doc = (await admin.call("insertone", collectionname=C, item={"name": "i"}))["result"]
    await admin.call("updateone", collectionname=C, item={**doc, "name": "j"})
    reply = await admin.call("getindexes", collectionname=C + "_hist")
    keys = [index["key"] for index in reply["results"]]
    assert {"id": 1, "_version": -1} in keys


async def test_default_skip_list_gets_no_history(admin: JsonClient) -> None:
    for name in ("mailhist", "workitems", "entities_hist"):
        doc = (await admin.call("insertone", collectionname=name, item={"v": 1}))["result"]
        await admin.call("updateone", collectionname=name, item={**doc, "v": 2})
        await admin.call("deleteone", collectionname=name, id=doc["_id"])
    names = await collections(admin)
    assert "mailhist_hist" not in names and "workitems_hist" not in names
    assert "entities_hist_hist" not in names


async def test_bad_input_gets_clear_errors(admin: JsonClient) -> None:
    doc = (await admin.call("insertone", collectionname=C, item={"name": "b"}))["result"]
    await admin.call("updateone", collectionname=C, item={**doc, "name": "c"})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": "nosuchdocument", "version": 0}, "not found in entities"),
        ({"id": doc["_id"], "version": 2}, "version 2 of .* does not exist; the last is 1"),
        ({"id": doc["_id"], "version": "abc"}, "version must be a whole number"),
        ({"id": doc["_id"], "version": 1.5}, "version must be a whole number"),
        ({"id": doc["_id"], "version": -1}, "version must be a whole number"),
        ({"id": doc["_id"], "version": True}, "version must be a whole number"),
        ({"id": doc["_id"], "version": None}, "version must be a whole number"),
        ({"id": doc["_id"], "version": [1]}, "version must be a whole number"),
        ({"id": doc["_id"]}, "version is required"),
        ({"version": 0}, "id of the document is required"),
        ({"id": {"$ne": None}, "version": 0}, "id of the document is required"),
    ]
    for data, message in cases:
        with pytest.raises(ReplyError, match=message):
            await admin.call("getdocumentversion", collectionname=C, **data)
    assert (await version(admin, doc["_id"], "0"))["name"] == "b"
    assert (await version(admin, doc["_id"], 1.0))["name"] == "c"
    with pytest.raises(ReplyError, match="collectionname is required"):
        await admin.call("getdeleteddocuments")
    with pytest.raises(ReplyError, match="top must be a number"):
        await admin.call("getdeleteddocuments", collectionname=C, top="many")
    with pytest.raises(ReplyError, match="id of the deleted document is required"):
        await admin.call("restoredocument", collectionname=C)
    with pytest.raises(ReplyError, match="no deleted document nosuch in entities"):
        await admin.call("restoredocument", collectionname=C, id="nosuch")


class TestSmallSnapshotsAndCustomSkipList:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        return {"history": {"snapshot_every": 3, "skip_collections": ["scratch"]}}

    async def test_snapshots_every_n_versions_still_rebuild(self, admin: JsonClient) -> None:
        doc = (
            await admin.call("insertone", collectionname=C, item={"name": "s", "n": 0, "l": []})
        )["result"]
        versions = [await current(admin, doc["_id"])]
        for step in range(1, 9):
            if step % 2:
                await admin.call(
                    "updateone",
                    collectionname=C,
                    query={"_id": doc["_id"]},
                    item={"$inc": {"n": 1}, "$push": {"l": {"step": step}}},
                )
            else:
                now = dict(versions[-1])
                now["l"] = [*now["l"][1:], [step]]
                now[f"f{step}"] = {"step": step}
                await admin.call("updateone", collectionname=C, item=now)
            versions.append(await current(admin, doc["_id"]))
        records = await history(admin, doc["_id"])
        kinds = ["item" if "item" in r else "delta" for r in records]
        assert [r["_version"] for r in records] == list(range(9))
        assert kinds == ["item", "delta", "delta", "item", "delta", "delta", "item"] + ["delta"] * 2
        for number, expected in enumerate(versions):
            assert exact(await version(admin, doc["_id"], number)) == exact(expected)

    async def test_configured_skip_list_replaces_the_default(self, admin: JsonClient) -> None:
        doc = (await admin.call("insertone", collectionname="scratch", item={"v": 1}))["result"]
        await admin.call("updateone", collectionname="scratch", item={**doc, "v": 2})
        with pytest.raises(ReplyError, match="scratch keeps no history"):
            await version(admin, doc["_id"], 0, "scratch")
        assert (await version(admin, doc["_id"], 1, "scratch"))["v"] == 2
        await admin.call("deleteone", collectionname="scratch", id=doc["_id"])
        assert await deleted(admin, "scratch") == []
        mail = (await admin.call("insertone", collectionname="mailhist", item={"v": 1}))["result"]
        await admin.call("updateone", collectionname="mailhist", item={**mail, "v": 2})
        names = await collections(admin)
        assert "scratch_hist" not in names and "mailhist_hist" in names
