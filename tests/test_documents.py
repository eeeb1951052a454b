"""The document commands with OpenFlow's fields and reply shapes."""

from __future__ import annotations

import json

import pytest

from iapflow.testing import JsonClient, ReplyError

C = "entities"


async def seed(client: JsonClient, *items: dict[str, object]) -> list[dict[str, object]]:
    reply = await client.call("insertmany", collectionname=C, items=list(items))
    return list(reply["results"])


async def names(client: JsonClient, **query: object) -> list[object]:
    reply = await client.call("query", collectionname=C, **query)
    return [d.get("name") for d in reply["result"]]


async def test_insertone_returns_the_stored_document(admin: JsonClient) -> None:
    reply = await admin.call("insertone", collectionname=C, item={"name": "a", "_type": "Thing"})
    doc = reply["result"]
    assert len(doc["_id"]) == 24
    assert doc["_type"] == "thing"  # lower-cased
    assert doc["_version"] == 0
    assert doc["_createdby"] == "admin" and doc["_modifiedbyid"] == admin.user["_id"]
    assert doc["_created"].endswith("Z")


async def test_item_may_be_a_json_string(admin: JsonClient) -> None:
    reply = await admin.call("insertone", collectionname=C, item=json.dumps({"name": "s"}))
    assert reply["result"]["name"] == "s"


async def test_query_top_skip_orderby_projection(admin: JsonClient) -> None:
    await seed(admin, *({"name": f"n{i}", "i": i} for i in range(5)))
    assert await names(admin, query={}, orderby={"i": -1}, top=2) == ["n4", "n3"]
    assert await names(admin, query={}, orderby="i", skip=3) == ["n3", "n4"]
    assert await names(admin, query={}, orderby='{"i": -1}', top=1) == ["n4"]
    projected = await admin.call("query", collectionname=C, query={"i": 1}, projection={"name": 1})
    assert set(projected["result"][0]) == {"_id", "name"}


async def test_query_understands_regexp_strings_and_iso_dates(admin: JsonClient) -> None:
    await seed(
        admin,
        {"name": "Alpha", "at": "2024-01-02T03:04:05.000Z"},
        {"name": "beta", "at": "2025-06-01T00:00:00Z"},
    )
    assert await names(admin, query={"name": "__REGEXP /^al/i"}) == ["Alpha"]
    assert await names(admin, query={"at": {"$gt": "2025-01-01T00:00:00.000Z"}}) == ["beta"]
    # Dates are stored as dates and come back as ISO strings.
    found = await admin.call("query", collectionname=C, query={"name": "beta"})
    assert found["result"][0]["at"] == "2025-06-01T00:00:00.000Z"


async def test_query_as_json_string(admin: JsonClient) -> None:
    await seed(admin, {"name": "x"}, {"name": "y"})
    assert await names(admin, query='{"name": "y"}') == ["y"]


async def test_count_and_distinct(admin: JsonClient) -> None:
    await seed(admin, {"name": "a", "k": 1}, {"name": "b", "k": 1}, {"name": "c", "k": 2})
    assert (await admin.call("count", collectionname=C, query={"k": 1}))["result"] == 2
    reply = await admin.call("distinct", collectionname=C, field="k", query={})
    assert sorted(reply["results"]) == [1, 2]


async def test_aggregate_pipeline_and_single_stage(admin: JsonClient) -> None:
    await seed(admin, {"name": "a", "k": 1}, {"name": "b", "k": 1}, {"name": "c", "k": 2})
    reply = await admin.call(
        "aggregate",
        collectionname=C,
        aggregates=[{"$group": {"_id": "$k", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}],
    )
    assert reply["result"] == [{"_id": 1, "n": 2}, {"_id": 2, "n": 1}]
    single = await admin.call("aggregate", collectionname=C, aggregates={"$match": {"k": 2}})
    assert [d["name"] for d in single["result"]] == ["c"]


async def test_updateone_replace_keeps_system_fields_and_bumps_version(admin: JsonClient) -> None:
    (doc,) = await seed(admin, {"name": "v0"})
    reply = await admin.call("updateone", collectionname=C, item={"_id": doc["_id"], "name": "v1"})
    new = reply["result"]
    assert new["name"] == "v1" and new["_version"] == 1
    assert new["_created"] == doc["_created"] and new["_acl"] == doc["_acl"]
    same = await admin.call("updateone", collectionname=C, item=new)
    assert same["result"]["_version"] == 1  # nothing changed: no new version


async def test_updateone_with_query_and_operators(admin: JsonClient) -> None:
    await seed(admin, {"name": "count", "n": 1})
    reply = await admin.call(
        "updateone", collectionname=C, query={"name": "count"}, item={"$inc": {"n": 5}}
    )
    assert reply["result"]["n"] == 6
    assert reply["opresult"]["matchedCount"] == 1
    assert reply["result"]["_version"] == 1


async def test_operators_may_not_touch_system_fields(admin: JsonClient) -> None:
    (doc,) = await seed(admin, {"name": "guarded"})
    with pytest.raises(ReplyError, match="_acl"):
        await admin.call(
            "updateone", collectionname=C, query={"_id": doc["_id"]}, item={"$set": {"_acl": []}}
        )


@pytest.mark.parametrize("command", ["updatemany", "updatedocument"])
async def test_updatemany_and_its_alias(admin: JsonClient, command: str) -> None:
    await seed(admin, {"name": "a", "k": 1}, {"name": "b", "k": 1}, {"name": "c", "k": 2})
    reply = await admin.call(
        command, collectionname=C, query={"k": 1}, item={"$set": {"seen": True}}
    )
    assert reply["opresult"] == {"matchedCount": 2, "modifiedCount": 2}
    assert (await admin.call("count", collectionname=C, query={"seen": True}))["result"] == 2


async def test_insertorupdateone_by_uniqeness(admin: JsonClient) -> None:
    first = await admin.call(
        "insertorupdateone", collectionname=C, item={"key": "k1", "v": 1}, uniqeness="key"
    )
    second = await admin.call(
        "insertorupdateone", collectionname=C, item={"key": "k1", "v": 2}, uniqeness="key"
    )
    assert first["result"]["_id"] == second["result"]["_id"]
    assert second["result"]["v"] == 2 and second["result"]["_version"] == 1
    assert (await admin.call("count", collectionname=C, query={"key": "k1"}))["result"] == 1


async def test_insertorupdateone_refuses_ambiguous_match(admin: JsonClient) -> None:
    await seed(admin, {"key": "dup"}, {"key": "dup"})
    with pytest.raises(ReplyError, match="more than one"):
        await admin.call(
            "insertorupdateone", collectionname=C, item={"key": "dup"}, uniqeness="key"
        )


async def test_insertorupdatemany(admin: JsonClient) -> None:
    items = [{"a": 1, "b": 1, "v": 1}, {"a": 1, "b": 2, "v": 1}]
    await admin.call("insertorupdatemany", collectionname=C, items=items, uniqeness="a,b")
    items[1]["v"] = 2
    reply = await admin.call("insertorupdatemany", collectionname=C, items=items, uniqeness="a,b")
    assert [d["v"] for d in reply["results"]] == [1, 2]
    assert (await admin.call("count", collectionname=C, query={}))["result"] == 2


async def test_deleteone_and_deletemany(admin: JsonClient) -> None:
    docs = await seed(admin, *({"name": f"d{i}", "k": i % 2} for i in range(6)))
    assert (await admin.call("deleteone", collectionname=C, id=docs[0]["_id"]))["affectedrows"] == 1
    with pytest.raises(ReplyError, match="not found"):
        await admin.call("deleteone", collectionname=C, id=docs[0]["_id"])
    assert (await admin.call("deletemany", collectionname=C, ids=[docs[1]["_id"], docs[2]["_id"]]))[
        "affectedrows"
    ] == 2
    assert (await admin.call("deletemany", collectionname=C, query={"k": 1}))["affectedrows"] == 2
    assert await names(admin, query={}) == ["d4"]


async def test_collections_create_list_drop(admin: JsonClient) -> None:
    await admin.call("createcollection", collectionname="orders")
    await admin.call("insertone", collectionname="orders_hist", item={"x": 1})
    listed = {c["name"] for c in (await admin.call("listcollections"))["result"]}
    assert "orders" in listed and "orders_hist" not in listed
    with_hist = {
        c["name"] for c in (await admin.call("listcollections", includehist=True))["result"]
    }
    assert "orders_hist" in with_hist
    await admin.call("dropcollection", collectionname="orders")
    listed = {c["name"] for c in (await admin.call("listcollections", includehist=True))["result"]}
    assert "orders" not in listed and "orders_hist" not in listed


@pytest.mark.parametrize("name", ["users", "audit", "config", "nodered"])
async def test_reserved_collections_cannot_be_dropped_or_created(
    admin: JsonClient, name: str
) -> None:
    with pytest.raises(ReplyError, match="reserved"):
        await admin.call("dropcollection", collectionname=name)
    with pytest.raises(ReplyError, match="reserved"):
        await admin.call("createcollection", collectionname=name)


async def test_collection_commands_are_for_admins(make_user: object) -> None:
    user = await make_user()  # type: ignore[operator]
    with pytest.raises(ReplyError, match="only admins"):
        await user.call("createcollection", collectionname="mine")
    listed = await user.call("listcollections")
    assert isinstance(listed["result"], list)


async def test_id_strings_match_objectid_documents(
    admin: JsonClient, mongo_storage: dict[str, str]
) -> None:
    # Data from OpenFlow installations may hold ObjectId _ids; a string id still finds them.
    from bson import ObjectId
    from pymongo import AsyncMongoClient

    oid = ObjectId()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_storage["url"])
    try:
        await client[mongo_storage["database"]][C].insert_one(
            {"_id": oid, "name": "legacy", "_acl": [{"_id": admin.user["_id"], "rights": 65535}]}
        )
    finally:
        await client.close()
    found = await admin.call("query", collectionname=C, query={"_id": str(oid)})
    assert found["result"][0]["_id"] == str(oid)


async def test_deletemany_with_an_explicit_empty_query_deletes_what_you_may(
    admin: JsonClient,
) -> None:
    await seed(admin, {"name": "a"}, {"name": "b"})
    with pytest.raises(ReplyError, match="query or ids"):
        await admin.call("deletemany", collectionname=C)
    assert (await admin.call("deletemany", collectionname=C, query={}))["affectedrows"] == 2


async def test_createcollection_passes_only_create_options(admin: JsonClient) -> None:
    await admin.call(
        "createcollection", collectionname="series", clientagent="x", timeseries={"timeField": "ts"}
    )
    # clientagent is not a create option: it must not reach the store (which would refuse it).
    listed = {c["name"] for c in (await admin.call("listcollections"))["result"]}
    assert "series" in listed


async def test_nested_passwords_are_never_echoed(admin: JsonClient) -> None:
    reply = await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": "echo", "newpassword": "s3cret"},
    )
    assert "s3cret" not in json.dumps(reply)
