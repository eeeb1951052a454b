"""Audit log, indexes, housekeeping and customcommand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from iapflow.testing import JsonClient, ReplyError

Connect = Callable[..., Awaitable[JsonClient]]
MakeUser = Callable[..., Awaitable[JsonClient]]


async def audit_entries(client: JsonClient, **query: object) -> list[dict[str, object]]:
    reply = await client.call("query", collectionname="audit", query=query, orderby={"_created": 1})
    return list(reply["result"])


async def test_signins_are_audited_with_address_and_agent(
    admin: JsonClient, connect: Connect
) -> None:
    client = await connect()
    with pytest.raises(ReplyError):
        await client.signin("admin", "wrong", clientagent="pytest-agent", clientversion="1.2")
    await client.signin("admin", "admin", clientagent="pytest-agent")
    entries = await audit_entries(admin, _type="signin", clientagent="pytest-agent")
    assert [e["success"] for e in entries] == [False, True]
    failed, ok = entries
    assert failed["remoteip"] == "127.0.0.1" and failed["clientversion"] == "1.2"
    assert failed["reason"] == "unknown username or wrong password"
    assert ok["userid"] == admin.user["_id"] and ok["username"] == "admin"


async def test_users_read_their_own_audit_entries_only(make_user: MakeUser) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    mine = await audit_entries(alice, _type="signin")
    assert mine and {e["userid"] for e in mine} == {alice.user["_id"]}
    theirs = await audit_entries(bob, userid=alice.user["_id"])
    assert theirs == []


async def test_audit_log_cannot_be_changed(admin: JsonClient, make_user: MakeUser) -> None:
    user = await make_user()
    (entry,) = (await audit_entries(user, _type="signin"))[-1:]
    for client in (admin, user):
        with pytest.raises(ReplyError, match="audit log"):
            await client.call(
                "insertone", collectionname="audit", item={"_type": "signin", "success": True}
            )
        with pytest.raises(ReplyError, match="audit log"):
            await client.call("updateone", collectionname="audit", item={**entry, "success": False})
        with pytest.raises(ReplyError, match="audit log"):
            await client.call(
                "updatemany", collectionname="audit", query={}, item={"$set": {"x": 1}}
            )
    with pytest.raises(ReplyError, match="not found"):
        await user.call("deleteone", collectionname="audit", id=entry["_id"])
    assert (await admin.call("deleteone", collectionname="audit", id=entry["_id"]))[
        "affectedrows"
    ] == 1


async def test_impersonation_and_collection_changes_are_audited(
    admin: JsonClient, make_user: MakeUser, connect: Connect
) -> None:
    user = await make_user("carl")
    other = await connect()
    await other.signin("admin", "admin", impersonate=user.user["_id"])
    (entry,) = await audit_entries(admin, _type="impersonate")
    assert entry["impostorid"] == admin.user["_id"] and entry["userid"] == user.user["_id"]
    await admin.call("createcollection", collectionname="audited")
    await admin.call("dropcollection", collectionname="audited")
    actions = [
        e["action"] for e in await audit_entries(admin, _type="collection", collection="audited")
    ]
    assert actions == ["create", "drop"]


async def test_indexes_create_list_drop(admin: JsonClient) -> None:
    await admin.call("insertone", collectionname="things", item={"sku": "a"})
    name = (
        await admin.call(
            "createindex",
            collectionname="things",
            index={"sku": 1},
            options={"unique": True},
            name="sku_unique",
        )
    )["result"]
    assert name == "sku_unique"
    indexes = {
        i["name"]: i for i in (await admin.call("getindexes", collectionname="things"))["results"]
    }
    assert indexes["sku_unique"]["unique"] is True
    with pytest.raises(ReplyError, match="duplicate key"):
        await admin.call("insertone", collectionname="things", item={"sku": "a"})
    await admin.call("dropindex", collectionname="things", name="sku_unique")
    assert "sku_unique" not in {
        i["name"] for i in (await admin.call("getindexes", collectionname="things"))["results"]
    }


async def test_index_input_errors(admin: JsonClient) -> None:
    with pytest.raises(ReplyError, match="direction"):
        await admin.call("createindex", collectionname="things", index={"sku": 7})
    with pytest.raises(ReplyError, match="unknown index option"):
        await admin.call(
            "createindex", collectionname="things", index={"sku": 1}, options={"bogus": 1}
        )
    with pytest.raises(ReplyError, match="_id index"):
        await admin.call("dropindex", collectionname="things", name="_id_")


async def test_users_index_is_ensured_at_startup(admin: JsonClient) -> None:
    indexes = {
        i["name"]: i for i in (await admin.call("getindexes", collectionname="users"))["results"]
    }
    assert indexes["username_1"]["unique"] is True


@pytest.mark.parametrize(
    ("command", "data"),
    [
        ("housekeeping", {}),
        ("createindex", {"collectionname": "x", "index": {"a": 1}}),
        ("dropindex", {"collectionname": "x", "name": "a_1"}),
        ("getindexes", {"collectionname": "x"}),
        ("customcommand", {"command": "getclients"}),
        ("customcommand", {"command": "clearcache"}),
    ],
)
async def test_admin_commands_refuse_other_users(
    make_user: MakeUser, command: str, data: dict[str, object]
) -> None:
    user = await make_user()
    with pytest.raises(ReplyError, match="admins only"):
        await user.call(command, **data)


async def test_housekeeping_restores_builtin_roles(
    admin: JsonClient, mongo_storage: dict[str, str]
) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_storage["url"])
    try:
        await client[mongo_storage["database"]]["users"].delete_one(
            {"_id": "5b6ab63c8d4a64b7c47f4a8e"}
        )
    finally:
        await client.close()
    report = (await admin.call("housekeeping"))["result"]
    assert report["stale_sessions_closed"] == 0
    found = await admin.call(
        "query", collectionname="users", query={"_id": "5b6ab63c8d4a64b7c47f4a8e"}
    )
    assert found["result"][0]["name"] == "filestore admins"


async def test_getclients_and_kill(admin: JsonClient, make_user: MakeUser) -> None:
    victim = await make_user("victim")
    clients = (await admin.call("customcommand", command="getclients"))["result"]
    (target,) = [c for c in clients if c["user"] and c["user"]["username"] == "victim"]
    assert target["remoteip"] == "127.0.0.1" and target["protocol"] == "json"
    await admin.call("customcommand", command="killwebsocketclient", id=target["id"])
    await asyncio.wait_for(victim.closed.wait(), 5)
    with pytest.raises(ReplyError, match="no connected client"):
        await admin.call("customcommand", command="killwebsocketclient", id=target["id"])


async def test_clearcache_and_unknown_subcommand(admin: JsonClient) -> None:
    assert (await admin.call("customcommand", command="clearcache"))["result"] is True
    with pytest.raises(ReplyError, match="unknown customcommand"):
        await admin.call("customcommand", command="heapdump")
