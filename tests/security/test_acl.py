"""The security model against a real server and store: ACL filtering on every read path
(joins included), write refusals, grants (direct, through roles, transitive), deny entries,
admin-only operators, the rules of the ``users`` collection, and the system fields on insert."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from attack import refused

from iapflow.testing import JsonClient, ReplyError

ADMINS_ID = "5a1702fa245d9013697656fb"
FULL_CONTROL = 65535
READ, UPDATE, DELETE = 2, 4, 8
COLL = "entities"
OTHER = "notes"  # a collection the second user writes its own documents to

MakeUser = Callable[..., Awaitable[JsonClient]]


# -- helpers ------------------------------------------------------------------------------------


def uid(client: JsonClient) -> str:
    """The signed-in user's id."""
    return str(client.user["_id"])


async def insert(
    client: JsonClient, item: dict[str, Any], collection: str = COLL
) -> dict[str, Any]:
    """Insert one document and return it as stored."""
    reply = await client.call("insertone", collectionname=collection, item=item)
    return reply["result"]  # type: ignore[no-any-return]


async def find(
    client: JsonClient, query: Any = None, collection: str = COLL, **extra: Any
) -> list[dict[str, Any]]:
    """Query documents."""
    reply = await client.call("query", collectionname=collection, query=query or {}, **extra)
    return reply["result"]  # type: ignore[no-any-return]


async def ids_found(client: JsonClient, query: Any = None, collection: str = COLL) -> set[str]:
    """Ids of the documents ``client`` finds."""
    return {doc["_id"] for doc in await find(client, query, collection)}


async def count(client: JsonClient, query: Any = None, collection: str = COLL) -> int:
    """Count documents."""
    reply = await client.call("count", collectionname=collection, query=query or {})
    return reply["result"]  # type: ignore[no-any-return]


async def aggregate(
    client: JsonClient, pipeline: list[dict[str, Any]], collection: str = COLL
) -> list[dict[str, Any]]:
    """Run a pipeline."""
    reply = await client.call("aggregate", collectionname=collection, aggregates=pipeline)
    return reply["result"]  # type: ignore[no-any-return]


async def stored(admin: JsonClient, doc_id: str, collection: str = COLL) -> dict[str, Any] | None:
    """The document as it is stored (read as admin)."""
    found = await find(admin, {"_id": doc_id}, collection)
    return found[0] if found else None


async def replace(
    client: JsonClient, doc: dict[str, Any], collection: str = COLL
) -> dict[str, Any]:
    """``updateone`` without ``query``: replace the document by ``_id``."""
    reply = await client.call("updateone", collectionname=collection, item=doc)
    return reply["result"]  # type: ignore[no-any-return]


async def grant(
    owner: JsonClient,
    doc_id: str,
    principal_id: str,
    rights: int,
    *,
    deny: bool = False,
    collection: str = COLL,
) -> None:
    """``owner`` adds an ACE to the document's ``_acl`` with a full replace."""
    doc = (await find(owner, {"_id": doc_id}, collection))[0]
    ace: dict[str, Any] = {"_id": principal_id, "name": "", "rights": rights}
    if deny:
        ace["deny"] = True
    doc["_acl"] = [*doc["_acl"], ace]
    await replace(owner, doc, collection)


async def create_role(creator: JsonClient, name: str, member_ids: list[str]) -> str:
    """Create a role in ``users`` with these members; return its id."""
    role = await insert(
        creator,
        {"_type": "role", "name": name, "members": [{"_id": m, "name": ""} for m in member_ids]},
        "users",
    )
    return str(role["_id"])


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
async def alice(make_user: MakeUser) -> JsonClient:
    """The owner of the secret document."""
    return await make_user()


@pytest.fixture
async def bob(make_user: MakeUser) -> JsonClient:
    """Another user, who was given no rights."""
    return await make_user()


@pytest.fixture
async def secret(alice: JsonClient) -> dict[str, Any]:
    """A document alice inserted; nobody else is in its ACL (besides admins)."""
    return await insert(
        alice, {"name": "alice's secret", "kind": "secret", "value": 42, "next": None}
    )


@pytest.fixture
async def unchanged(admin: JsonClient, secret: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    """Call it to assert that the secret document is still exactly as inserted."""

    async def check() -> None:
        assert await stored(admin, secret["_id"]) == secret

    return check


# -- reads: the other user sees nothing ---------------------------------------------------------


async def test_other_user_cannot_query(bob: JsonClient, secret: dict[str, Any]) -> None:
    assert await find(bob) == []
    assert await find(bob, {"_id": secret["_id"]}) == []
    assert await find(bob, {"name": secret["name"]}) == []


async def test_other_user_cannot_count(
    bob: JsonClient, alice: JsonClient, secret: dict[str, Any]
) -> None:
    assert await count(alice) == 1
    assert await count(bob) == 0
    assert await count(bob, {"_id": secret["_id"]}) == 0


async def test_other_user_cannot_distinct(
    bob: JsonClient, alice: JsonClient, secret: dict[str, Any]
) -> None:
    await insert(bob, {"kind": "bob's"})
    reply = await bob.call("distinct", collectionname=COLL, field="kind", query={})
    assert reply["results"] == ["bob's"]
    reply = await alice.call("distinct", collectionname=COLL, field="kind", query={})
    assert reply["results"] == ["secret"]


async def test_other_user_cannot_aggregate(bob: JsonClient, secret: dict[str, Any]) -> None:
    assert await aggregate(bob, [{"$match": {}}]) == []
    assert await aggregate(bob, [{"$match": {"_id": secret["_id"]}}]) == []
    assert await aggregate(bob, [{"$group": {"_id": None, "n": {"$sum": 1}}}]) == []
    assert await aggregate(bob, [{"$project": {"name": 1}}]) == []


async def test_queryas_the_owner_does_not_widen_what_the_other_user_sees(
    bob: JsonClient, alice: JsonClient, secret: dict[str, Any]
) -> None:
    reply = await bob.call("query", collectionname=COLL, query={}, queryas=uid(alice))
    assert reply["result"] == []


async def test_lookup_from_a_readable_collection_joins_only_readable_documents(
    bob: JsonClient, secret: dict[str, Any]
) -> None:
    own = await insert(bob, {"name": "bob's own"})
    await insert(bob, {"name": "hidden ref", "ref": secret["_id"]}, OTHER)
    await insert(bob, {"name": "own ref", "ref": own["_id"]}, OTHER)
    stages: list[dict[str, Any]] = [
        {"$lookup": {"from": COLL, "localField": "ref", "foreignField": "_id", "as": "joined"}},
        {"$sort": {"name": 1}},
    ]
    result = await aggregate(bob, stages, OTHER)
    assert [(d["name"], [j["_id"] for j in d["joined"]]) for d in result] == [
        ("hidden ref", []),
        ("own ref", [own["_id"]]),
    ]


async def test_lookup_with_a_pipeline_joins_only_readable_documents(
    bob: JsonClient, secret: dict[str, Any]
) -> None:
    own = await insert(bob, {"name": "bob's own"})
    await insert(bob, {"name": "probe"}, OTHER)
    stages = [{"$lookup": {"from": COLL, "pipeline": [{"$match": {}}], "as": "joined"}}]
    result = await aggregate(bob, stages, OTHER)
    assert [j["_id"] for j in result[0]["joined"]] == [own["_id"]]


async def test_union_with_adds_only_readable_documents(
    bob: JsonClient, secret: dict[str, Any]
) -> None:
    own = await insert(bob, {"name": "bob's own"})
    note = await insert(bob, {"name": "note"}, OTHER)
    by_name = await aggregate(bob, [{"$unionWith": COLL}], OTHER)
    assert {d["_id"] for d in by_name} == {note["_id"], own["_id"]}
    by_spec = await aggregate(bob, [{"$unionWith": {"coll": COLL}}], OTHER)
    assert {d["_id"] for d in by_spec} == {note["_id"], own["_id"]}
    aimed = [{"$unionWith": {"coll": COLL, "pipeline": [{"$match": {"_id": secret["_id"]}}]}}]
    assert {d["_id"] for d in await aggregate(bob, aimed, OTHER)} == {note["_id"]}


async def test_graph_lookup_reaches_only_readable_documents(
    bob: JsonClient, secret: dict[str, Any]
) -> None:
    own = await insert(bob, {"name": "bob's own", "next": secret["_id"]})
    await insert(bob, {"name": "to secret", "start": secret["_id"]}, OTHER)
    await insert(bob, {"name": "to own", "start": own["_id"]}, OTHER)
    stages: list[dict[str, Any]] = [
        {
            "$graphLookup": {
                "from": COLL,
                "startWith": "$start",
                "connectFromField": "next",
                "connectToField": "_id",
                "as": "chain",
            }
        },
        {"$sort": {"name": 1}},
    ]
    result = await aggregate(bob, stages, OTHER)
    assert [(d["name"], [c["_id"] for c in d["chain"]]) for d in result] == [
        ("to own", [own["_id"]]),
        ("to secret", []),
    ]


async def test_joins_nested_in_facet_are_filtered(bob: JsonClient, secret: dict[str, Any]) -> None:
    own = await insert(bob, {"name": "bob's own"})
    await insert(bob, {"name": "ref", "ref": secret["_id"]}, OTHER)
    facet = {
        "$facet": {
            "looked": [{"$lookup": {"from": COLL, "pipeline": [], "as": "joined"}}],
            "unioned": [{"$unionWith": COLL}, {"$project": {"_id": 1}}],
            "graph": [
                {
                    "$graphLookup": {
                        "from": COLL,
                        "startWith": "$ref",
                        "connectFromField": "next",
                        "connectToField": "_id",
                        "as": "chain",
                    }
                }
            ],
            "nested": [
                {
                    "$lookup": {
                        "from": OTHER,
                        "pipeline": [
                            {
                                "$lookup": {
                                    "from": COLL,
                                    "localField": "ref",
                                    "foreignField": "_id",
                                    "as": "joined",
                                }
                            },
                        ],
                        "as": "outer",
                    }
                }
            ],
        }
    }
    [result] = await aggregate(bob, [facet], OTHER)
    assert [j["_id"] for j in result["looked"][0]["joined"]] == [own["_id"]]
    assert secret["_id"] not in {d["_id"] for d in result["unioned"]}
    assert own["_id"] in {d["_id"] for d in result["unioned"]}
    assert result["graph"][0]["chain"] == []
    assert result["nested"][0]["outer"][0]["joined"] == []
    assert secret["name"] not in json.dumps(result)


# -- writes: the other user changes nothing ------------------------------------------------------


async def test_other_user_cannot_replace(
    bob: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    await refused(bob, "updateone", collectionname=COLL, item={**secret, "name": "hijacked"})
    await refused(
        bob, "updateone", collectionname=COLL, item={"_id": secret["_id"], "name": "hijacked"}
    )
    await unchanged()


async def test_other_user_cannot_update_with_operators(
    bob: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    reply = await bob.call(
        "updateone",
        collectionname=COLL,
        query={"_id": secret["_id"]},
        item={"$set": {"name": "hijacked"}},
    )
    assert reply["result"] is None
    assert reply["opresult"]["matchedCount"] == 0
    await unchanged()


async def test_other_user_cannot_updatemany(
    bob: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    for query in ({}, {"_id": secret["_id"]}):
        reply = await bob.call(
            "updatemany", collectionname=COLL, query=query, item={"$set": {"name": "hijacked"}}
        )
        assert reply["opresult"]["matchedCount"] == 0
    await unchanged()


async def test_other_user_cannot_insertorupdate_onto_the_document(
    bob: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    await refused(
        bob,
        "insertorupdateone",
        collectionname=COLL,
        item={"_id": secret["_id"], "name": "hijacked"},
    )
    await bob.call(
        "insertorupdateone",
        collectionname=COLL,
        uniqeness="kind",
        item={"kind": "secret", "name": "bob's own copy"},
    )
    await unchanged()


async def test_other_user_cannot_deleteone(
    bob: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    await refused(bob, "deleteone", collectionname=COLL, id=secret["_id"])
    await refused(bob, "deleteone", collectionname=COLL, _id=secret["_id"])
    await unchanged()


async def test_other_user_cannot_deletemany(
    bob: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    reply = await bob.call("deletemany", collectionname=COLL, query={"_id": secret["_id"]})
    assert reply["affectedrows"] == 0
    reply = await bob.call("deletemany", collectionname=COLL, query={"kind": {"$exists": True}})
    assert reply["affectedrows"] == 0
    reply = await bob.call("deletemany", collectionname=COLL, ids=[secret["_id"]])
    assert reply["affectedrows"] == 0
    await unchanged()


# -- granting -----------------------------------------------------------------------------------


async def test_read_grant_shows_the_document_everywhere(
    alice: JsonClient, bob: JsonClient, secret: dict[str, Any]
) -> None:
    await grant(alice, secret["_id"], uid(bob), READ)
    assert await ids_found(bob) == {secret["_id"]}
    assert await count(bob) == 1
    assert [d["_id"] for d in await aggregate(bob, [{"$match": {}}])] == [secret["_id"]]
    await insert(bob, {"ref": secret["_id"]}, OTHER)
    stages = [
        {"$lookup": {"from": COLL, "localField": "ref", "foreignField": "_id", "as": "joined"}}
    ]
    [joined] = await aggregate(bob, stages, OTHER)
    assert [j["_id"] for j in joined["joined"]] == [secret["_id"]]


async def test_read_grant_does_not_allow_update_or_delete(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    await grant(alice, secret["_id"], uid(bob), READ)
    before = await stored(admin, secret["_id"])
    assert before is not None
    visible = (await find(bob, {"_id": secret["_id"]}))[0]
    await refused(bob, "updateone", collectionname=COLL, item={**visible, "name": "hijacked"})
    reply = await bob.call(
        "updateone",
        collectionname=COLL,
        query={"_id": secret["_id"]},
        item={"$set": {"name": "hijacked"}},
    )
    assert reply["opresult"]["matchedCount"] == 0
    reply = await bob.call(
        "updatemany", collectionname=COLL, query={}, item={"$set": {"name": "hijacked"}}
    )
    assert reply["opresult"]["matchedCount"] == 0
    await refused(
        bob, "insertorupdateone", collectionname=COLL, item={**visible, "name": "hijacked"}
    )
    await refused(bob, "deleteone", collectionname=COLL, id=secret["_id"])
    reply = await bob.call("deletemany", collectionname=COLL, ids=[secret["_id"]])
    assert reply["affectedrows"] == 0
    assert await stored(admin, secret["_id"]) == before


async def test_update_grant_allows_update_but_not_delete(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    await grant(alice, secret["_id"], uid(bob), READ | UPDATE)
    visible = (await find(bob, {"_id": secret["_id"]}))[0]
    assert (await replace(bob, {**visible, "name": "renamed by bob"}))["name"] == "renamed by bob"
    reply = await bob.call(
        "updateone", collectionname=COLL, query={"_id": secret["_id"]}, item={"$set": {"value": 43}}
    )
    assert reply["result"]["value"] == 43
    await refused(bob, "deleteone", collectionname=COLL, id=secret["_id"])
    after = await stored(admin, secret["_id"])
    assert after is not None
    assert (after["name"], after["value"], after["_modifiedbyid"]) == (
        "renamed by bob",
        43,
        uid(bob),
    )


async def test_update_grant_without_read_still_allows_blind_update(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    await grant(alice, secret["_id"], uid(bob), UPDATE)
    assert await find(bob) == []
    reply = await bob.call(
        "updateone", collectionname=COLL, query={"_id": secret["_id"]}, item={"$set": {"value": 7}}
    )
    assert reply["opresult"]["matchedCount"] == 1
    after = await stored(admin, secret["_id"])
    assert after is not None and after["value"] == 7


async def test_delete_grant_allows_delete(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    await grant(alice, secret["_id"], uid(bob), READ | DELETE)
    reply = await bob.call("deleteone", collectionname=COLL, id=secret["_id"])
    assert reply["affectedrows"] == 1
    assert await stored(admin, secret["_id"]) is None


async def test_owner_cannot_take_away_its_own_update_right(
    alice: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    doc = (await find(alice, {"_id": secret["_id"]}))[0]
    doc["_acl"] = [ace for ace in doc["_acl"] if ace["_id"] != uid(alice)]
    await refused(alice, "updateone", collectionname=COLL, item=doc)
    await unchanged()


async def test_grant_through_a_role(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    role_id = await create_role(admin, "readers", [uid(bob)])
    assert await find(bob) == []
    await grant(alice, secret["_id"], role_id, READ)
    assert await ids_found(bob) == {secret["_id"]}


async def test_role_created_by_a_user_grants_to_its_members(
    alice: JsonClient, bob: JsonClient, secret: dict[str, Any]
) -> None:
    role_id = await create_role(alice, "alice's friends", [uid(bob)])
    await grant(alice, secret["_id"], role_id, READ)
    assert await ids_found(bob) == {secret["_id"]}


async def test_grant_through_a_role_inside_a_role(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    inner = await create_role(admin, "inner", [uid(bob)])
    outer = await create_role(admin, "outer", [inner])
    await grant(alice, secret["_id"], outer, READ)
    assert await ids_found(bob) == {secret["_id"]}
    assert await count(bob) == 1


async def test_removing_the_member_from_the_role_removes_access(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    role_id = await create_role(admin, "readers", [uid(bob)])
    await grant(alice, secret["_id"], role_id, READ)
    assert await ids_found(bob) == {secret["_id"]}
    role = (await find(admin, {"_id": role_id}, "users"))[0]
    await replace(admin, {**role, "members": []}, "users")
    assert await find(bob) == []


async def test_removing_the_member_with_an_operator_update_removes_access(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    role_id = await create_role(admin, "readers", [uid(bob)])
    await grant(alice, secret["_id"], role_id, READ)
    assert await ids_found(bob) == {secret["_id"]}
    await admin.call(
        "updateone",
        collectionname="users",
        query={"_id": role_id},
        item={"$pull": {"members": {"_id": uid(bob)}}},
    )
    assert await find(bob) == []


# -- deny entries -------------------------------------------------------------------------------


async def test_deny_on_the_user_beats_a_grant_to_the_user(
    alice: JsonClient, bob: JsonClient, secret: dict[str, Any]
) -> None:
    await grant(alice, secret["_id"], uid(bob), READ)
    await grant(alice, secret["_id"], uid(bob), READ, deny=True)
    assert await find(bob) == []
    assert await count(bob) == 0
    assert await aggregate(bob, [{"$match": {}}]) == []


async def test_deny_on_a_role_beats_a_grant_to_the_user(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    role_id = await create_role(admin, "blocked", [uid(bob)])
    await grant(alice, secret["_id"], uid(bob), READ | UPDATE)
    await grant(alice, secret["_id"], role_id, READ | UPDATE, deny=True)
    assert await find(bob) == []
    reply = await bob.call(
        "updateone", collectionname=COLL, query={"_id": secret["_id"]}, item={"$set": {"value": 0}}
    )
    assert reply["opresult"]["matchedCount"] == 0


async def test_deny_on_the_user_beats_a_grant_through_a_role(
    alice: JsonClient, bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    role_id = await create_role(admin, "readers", [uid(bob)])
    await grant(alice, secret["_id"], role_id, READ)
    await grant(alice, secret["_id"], uid(bob), READ, deny=True)
    assert await find(bob) == []
    await insert(bob, {"ref": secret["_id"]}, OTHER)
    stages = [
        {"$lookup": {"from": COLL, "localField": "ref", "foreignField": "_id", "as": "joined"}}
    ]
    [joined] = await aggregate(bob, stages, OTHER)
    assert joined["joined"] == []


async def test_deny_of_another_right_leaves_read(
    alice: JsonClient, bob: JsonClient, secret: dict[str, Any]
) -> None:
    await grant(alice, secret["_id"], uid(bob), READ | UPDATE)
    await grant(alice, secret["_id"], uid(bob), UPDATE, deny=True)
    assert await ids_found(bob) == {secret["_id"]}
    reply = await bob.call(
        "updateone", collectionname=COLL, query={"_id": secret["_id"]}, item={"$set": {"value": 0}}
    )
    assert reply["opresult"]["matchedCount"] == 0


# -- filters that try to escape the ACL ----------------------------------------------------------


@pytest.mark.parametrize(
    "make_query",
    [
        pytest.param(lambda b: {"_acl": {"$exists": True}}, id="exists"),
        pytest.param(lambda b: {"$or": [{"_acl._id": b}, {}]}, id="or-empty"),
        pytest.param(
            lambda b: {"$or": [{"_acl": {"$exists": True}}, {"_acl": None}]}, id="or-exists"
        ),
        pytest.param(lambda b: {"_acl": {"$elemMatch": {"_id": b}}}, id="elemMatch-self"),
        pytest.param(
            lambda b: {"_acl": {"$elemMatch": {"rights": {"$gt": 0}}}}, id="elemMatch-any"
        ),
        pytest.param(lambda b: {"_acl._id": {"$ne": b}}, id="ne-self"),
        pytest.param(lambda b: {"$nor": [{"_acl._id": "nobody"}]}, id="nor"),
        pytest.param(lambda b: {"$and": [{}], "_acl": {"$not": {"$size": 0}}}, id="and-size"),
        pytest.param(lambda b: {"$expr": {"$gt": [{"$size": "$_acl"}, 0]}}, id="expr"),
    ],
)
async def test_filters_on_acl_never_reveal_other_documents(
    bob: JsonClient, secret: dict[str, Any], make_query: Callable[[str], dict[str, Any]]
) -> None:
    query = make_query(uid(bob))
    assert await find(bob, query) == []
    assert await count(bob, query) == 0
    assert await aggregate(bob, [{"$match": query}]) == []
    reply = await bob.call("distinct", collectionname=COLL, field="name", query=query)
    assert reply["results"] == []
    reply = await bob.call("updatemany", collectionname=COLL, query=query, item={"$set": {"x": 1}})
    assert reply["opresult"]["matchedCount"] == 0
    reply = await bob.call("deletemany", collectionname=COLL, query=query)
    assert reply["affectedrows"] == 0


async def test_the_owner_still_finds_its_document_with_acl_filters(
    alice: JsonClient, secret: dict[str, Any]
) -> None:
    """Control for the escape tests: the same filters do match for someone who may read."""
    assert await ids_found(alice, {"_acl": {"$exists": True}}) == {secret["_id"]}
    assert await ids_found(alice, {"$or": [{"_acl._id": uid(alice)}, {}]}) == {secret["_id"]}


# -- admin-only operators -----------------------------------------------------------------------

FUNCTION = {"$function": {"body": "function() { return true; }", "args": [], "lang": "js"}}
ACCUMULATOR = {
    "$accumulator": {
        "init": "function() { return 0; }",
        "accumulate": "function(s) { return s; }",
        "accumulateArgs": [],
        "merge": "function(a, b) { return a; }",
        "lang": "js",
    }
}


@pytest.mark.parametrize(
    ("query", "operator"),
    [
        ({"$where": "true"}, "$where"),
        ({"$where": "function() { return true; }"}, "$where"),
        ({"$or": [{"a": 1}, {"$where": "true"}]}, "$where"),
        ({"$expr": FUNCTION}, "$function"),
    ],
)
async def test_code_operators_in_query_are_refused(
    bob: JsonClient, query: dict[str, Any], operator: str
) -> None:
    await insert(bob, {"a": 1})
    for command in ("query", "count"):
        message = await refused(bob, command, collectionname=COLL, query=query)
        assert operator in message and "admin" in message


@pytest.mark.parametrize(
    ("pipeline", "operator"),
    [
        ([{"$match": {"$where": "true"}}], "$where"),
        ([{"$addFields": {"x": FUNCTION}}], "$function"),
        ([{"$group": {"_id": None, "x": ACCUMULATOR}}], "$accumulator"),
        ([{"$out": "stolen"}], "$out"),
        ([{"$merge": {"into": "stolen"}}], "$merge"),
        ([{"$merge": "stolen"}], "$merge"),
        ([{"$facet": {"a": [{"$match": {"$where": "true"}}]}}], "$where"),
        (
            [{"$lookup": {"from": COLL, "pipeline": [{"$addFields": {"x": FUNCTION}}], "as": "j"}}],
            "$function",
        ),
        ([{"$unionWith": {"coll": COLL, "pipeline": [{"$out": "stolen"}]}}], "$out"),
    ],
)
async def test_code_and_write_stages_in_aggregate_are_refused(
    bob: JsonClient, admin: JsonClient, pipeline: list[dict[str, Any]], operator: str
) -> None:
    await insert(bob, {"a": 1})
    message = await refused(bob, "aggregate", collectionname=COLL, aggregates=pipeline)
    assert operator in message and "admin" in message
    collections = await admin.call("listcollections")
    assert "stolen" not in {c["name"] for c in collections["result"]}


async def test_admin_may_use_out(
    admin: JsonClient, alice: JsonClient, secret: dict[str, Any]
) -> None:
    await aggregate(admin, [{"$match": {}}, {"$out": "entities_copy"}])
    copied = await find(admin, collection="entities_copy")
    assert [d["_id"] for d in copied] == [secret["_id"]]


# -- the users collection -----------------------------------------------------------------------


def assert_no_password_hash(reply: Any) -> None:
    text = json.dumps(reply)
    assert "passwordhash" not in text
    assert "$2b$" not in text and "$2a$" not in text


async def test_own_user_document_has_no_password_hash(bob: JsonClient) -> None:
    [me] = await find(bob, {"_id": uid(bob)}, "users")
    assert me["username"] == bob.user["username"]
    assert_no_password_hash(me)
    assert_no_password_hash(await find(bob, collection="users"))
    assert_no_password_hash(await aggregate(bob, [{"$match": {}}], "users"))
    assert_no_password_hash(await aggregate(bob, [{"$project": {"everything": "$$ROOT"}}], "users"))


async def test_admin_sees_no_password_hash_either(admin: JsonClient, bob: JsonClient) -> None:
    users = await find(admin, {"_type": "user"}, "users")
    assert uid(bob) in {u["_id"] for u in users}
    assert_no_password_hash(users)
    assert_no_password_hash(await aggregate(admin, [{"$match": {"_type": "user"}}], "users"))


async def test_insertone_result_has_no_password_hash(admin: JsonClient) -> None:
    reply = await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": "carol", "newpassword": "pw"},
    )
    assert_no_password_hash(reply["result"])


async def test_replies_never_echo_the_new_password(admin: JsonClient) -> None:
    reply = await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": "dave", "newpassword": "s3cret-pw-123"},
    )
    assert "s3cret-pw-123" not in json.dumps(reply)


async def test_lookup_into_users_has_no_password_hash(bob: JsonClient) -> None:
    await insert(bob, {"owner": uid(bob)}, OTHER)
    for lookup in (
        {"from": "users", "localField": "owner", "foreignField": "_id", "as": "who"},
        {"from": "users", "pipeline": [{"$match": {}}], "as": "who"},
        {
            "from": "users",
            "pipeline": [{"$project": {"h": "$passwordhash", "all": "$$ROOT"}}],
            "as": "who",
        },
    ):
        [joined] = await aggregate(bob, [{"$lookup": lookup}], OTHER)
        assert joined["who"], lookup
        assert_no_password_hash(joined)
    [joined] = await aggregate(bob, [{"$unionWith": "users"}, {"$match": {"_type": "user"}}], OTHER)
    assert_no_password_hash(joined)


@pytest.mark.parametrize(
    ("command", "data"),
    [
        ("query", {"query": {"passwordhash": {"$exists": True}}}),
        ("query", {"query": {"$or": [{"passwordhash": {"$regex": "^\\$2"}}]}}),
        ("query", {"query": {}, "projection": {"passwordhash": 1}}),
        ("count", {"query": {"passwordhash": {"$gt": ""}}}),
        ("distinct", {"field": "passwordhash", "query": {}}),
        ("aggregate", {"aggregates": [{"$match": {"passwordhash": {"$exists": True}}}]}),
        ("aggregate", {"aggregates": [{"$project": {"passwordhash": 1}}]}),
    ],
    ids=[
        "query",
        "query-or",
        "projection",
        "count",
        "distinct",
        "aggregate-match",
        "aggregate-project",
    ],
)
async def test_filters_naming_passwordhash_are_refused(
    bob: JsonClient, command: str, data: dict[str, Any]
) -> None:
    message = await refused(bob, command, collectionname="users", **data)
    assert "passwordhash" in message


def hash_oracles(prefix: str) -> list[dict[str, Any]]:
    """Filters that hold when the password hash starts with ``prefix``, each read by value."""
    pattern = "^" + prefix.replace("$", "\\$")
    return [
        {"$expr": {"$regexMatch": {"input": "$passwordhash", "regex": pattern}}},
        {
            "$expr": {
                "$eq": [{"$substrBytes": [{"$getField": "passwordhash"}, 0, len(prefix)]}, prefix]
            }
        },
        {
            "$jsonSchema": {
                "required": ["passwordhash"],
                "patternProperties": {"^passwordh": {"pattern": pattern}},
            }
        },
    ]


async def answer(client: JsonClient, command: str, query: dict[str, Any]) -> Any:
    """What ``command`` on users answers for ``query``, or ``"refused"``."""
    try:
        if command == "aggregate":
            return await aggregate(client, [{"$match": query}, {"$count": "n"}], "users")
        return (await client.call(command, collectionname="users", query=query))["result"]
    except ReplyError:
        return "refused"


@pytest.mark.parametrize("command", ["query", "count", "aggregate"])
async def test_expressions_reading_passwordhash_reveal_nothing(
    bob: JsonClient, command: str
) -> None:
    """Filters that read fields by value (``"$passwordhash"``) must not work as an oracle:
    a true and a false guess about the hash get the same answer."""
    for right, wrong in zip(hash_oracles("$2"), hash_oracles("$9"), strict=True):
        own = {"_id": uid(bob)}
        assert await answer(bob, command, {**own, **right}) == await answer(
            bob, command, {**own, **wrong}
        ), right


async def test_projection_cannot_copy_passwordhash_into_another_field(bob: JsonClient) -> None:
    for projection in (
        {"h": "$passwordhash"},
        {"all": "$$ROOT"},
        {"h": {"$concat": ["$passwordhash"]}},
    ):
        try:
            reply = await bob.call(
                "query", collectionname="users", query={"_id": uid(bob)}, projection=projection
            )
        except ReplyError:
            continue
        assert_no_password_hash(reply["result"])


async def test_sorting_by_passwordhash_is_refused(bob: JsonClient) -> None:
    message = await refused(
        bob, "query", collectionname="users", query={}, orderby={"passwordhash": 1}
    )
    assert "passwordhash" in message


async def test_lookup_joining_on_passwordhash_is_refused(bob: JsonClient) -> None:
    await insert(bob, {"guess": "$2b$04$x"}, OTHER)
    lookup = {"from": "users", "localField": "guess", "foreignField": "passwordhash", "as": "hit"}
    message = await refused(
        bob, "aggregate", collectionname=OTHER, aggregates=[{"$lookup": lookup}]
    )
    assert "passwordhash" in message


async def test_user_can_read_and_update_its_own_document(
    bob: JsonClient, admin: JsonClient
) -> None:
    [me] = await find(bob, {"_id": uid(bob)}, "users")
    updated = await replace(bob, {**me, "name": "Bob Builder"}, "users")
    assert updated["name"] == "Bob Builder"
    assert_no_password_hash(updated)
    reply = await bob.call(
        "updateone",
        collectionname="users",
        query={"_id": uid(bob)},
        item={"$set": {"email": "bob@example.com"}},
    )
    assert reply["result"]["email"] == "bob@example.com"
    [after] = await find(admin, {"_id": uid(bob)}, "users")
    assert (after["name"], after["email"]) == ("Bob Builder", "bob@example.com")


async def test_user_keeps_its_password_after_updating_its_document(
    make_user: MakeUser, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    bob = await make_user("bobby", "pw1")
    [me] = await find(bob, {"_id": uid(bob)}, "users")
    await replace(bob, {**me, "name": "Bobby"}, "users")
    again = await connect()
    await again.signin("bobby", "pw1")


async def test_user_cannot_delete_its_own_document(bob: JsonClient, admin: JsonClient) -> None:
    await refused(bob, "deleteone", collectionname="users", id=uid(bob))
    reply = await bob.call("deletemany", collectionname="users", ids=[uid(bob)])
    assert reply["affectedrows"] == 0
    assert await stored(admin, uid(bob), "users") is not None


async def test_user_cannot_read_other_users(bob: JsonClient, alice: JsonClient) -> None:
    found = await ids_found(bob, {"_type": "user"}, "users")
    assert found == {uid(bob)}


@pytest.mark.parametrize(
    ("field", "value"), [("username", "root2"), ("disabled", True), ("_type", "role")]
)
async def test_user_cannot_change_admin_fields_of_its_own_document(
    bob: JsonClient, admin: JsonClient, field: str, value: Any
) -> None:
    before = await stored(admin, uid(bob), "users")
    [me] = await find(bob, {"_id": uid(bob)}, "users")
    await refused(bob, "updateone", collectionname="users", item={**me, field: value})
    await refused(
        bob,
        "updateone",
        collectionname="users",
        query={"_id": uid(bob)},
        item={"$set": {field: value}},
    )
    await refused(
        bob,
        "updatemany",
        collectionname="users",
        query={"_id": uid(bob)},
        item={"$set": {field: value}},
    )
    assert await stored(admin, uid(bob), "users") == before


@pytest.mark.parametrize(
    "field", ["username", "disabled", "_type", "passwordhash", "_acl", "_createdbyid"]
)
async def test_rename_cannot_write_protected_fields(
    bob: JsonClient, admin: JsonClient, field: str
) -> None:
    """``$rename`` names its target in the value: the target is protected like a ``$set`` key."""
    before = await stored(admin, uid(bob), "users")
    await refused(
        bob,
        "updateone",
        collectionname="users",
        query={"_id": uid(bob)},
        item={"$rename": {"name": field}},
    )
    assert await stored(admin, uid(bob), "users") == before


async def test_rename_cannot_overwrite_the_acl_of_a_document(
    alice: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    doc_id = secret["_id"]
    await alice.call(
        "updateone",
        collectionname=COLL,
        query={"_id": doc_id},
        item={"$set": {"fake": [{"_id": "x", "rights": "not a number"}]}},
    )
    before = await stored(admin, doc_id)
    await refused(
        alice,
        "updateone",
        collectionname=COLL,
        query={"_id": doc_id},
        item={"$rename": {"fake": "_acl"}},
    )
    assert await stored(admin, doc_id) == before


async def test_user_cannot_create_users(bob: JsonClient, admin: JsonClient) -> None:
    for item in (
        {"_type": "user", "username": "sneaky", "newpassword": "x"},
        {"username": "sneaky"},
    ):
        await refused(bob, "insertone", collectionname="users", item=item)
        await refused(bob, "insertorupdateone", collectionname="users", item=item)
    assert await find(admin, {"username": "sneaky"}, "users") == []


async def test_nobody_can_create_a_role_named_like_a_builtin(
    bob: JsonClient, admin: JsonClient
) -> None:
    for name in ("admins", "Admins", "users"):
        message = await refused(
            bob, "insertone", collectionname="users", item={"_type": "role", "name": name}
        )
        assert "reserved" in message
    await refused(
        admin, "insertone", collectionname="users", item={"_type": "role", "name": "admins"}
    )
    assert len(await find(admin, {"name": "admins"}, "users")) == 1


async def test_user_cannot_add_itself_to_admins(
    bob: JsonClient, admin: JsonClient, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    before = await stored(admin, ADMINS_ID, "users")
    assert before is not None
    member = {"_id": uid(bob), "name": "bob"}
    await refused(
        bob,
        "updateone",
        collectionname="users",
        item={**before, "members": [*before["members"], member]},
    )
    reply = await bob.call(
        "updateone",
        collectionname="users",
        query={"_id": ADMINS_ID},
        item={"$push": {"members": member}},
    )
    assert reply["opresult"]["matchedCount"] == 0
    reply = await bob.call(
        "updatemany",
        collectionname="users",
        query={"_type": "role"},
        item={"$push": {"members": member}},
    )
    assert reply["opresult"]["matchedCount"] == 0
    await refused(
        bob,
        "insertorupdateone",
        collectionname="users",
        item={"_id": ADMINS_ID, "_type": "role", "name": "admins", "members": [member]},
    )
    assert await stored(admin, ADMINS_ID, "users") == before
    again = await connect()
    await again.signin(bob.user["username"], "secret")
    assert ADMINS_ID not in {r["_id"] for r in again.user["roles"]}


async def test_own_role_does_not_lead_into_admins(
    bob: JsonClient, admin: JsonClient, secret: dict[str, Any]
) -> None:
    role_id = await create_role(bob, "bob's admins", [uid(bob)])
    reply = await bob.call(
        "updateone",
        collectionname="users",
        query={"_id": ADMINS_ID},
        item={"$push": {"members": {"_id": role_id, "name": "bob's admins"}}},
    )
    assert reply["opresult"]["matchedCount"] == 0
    # Making admins a member of bob's role gives bob nothing: membership is member -> role.
    [role] = await find(bob, {"_id": role_id}, "users")
    await replace(
        bob, {**role, "members": [*role["members"], {"_id": ADMINS_ID, "name": "admins"}]}, "users"
    )
    assert await find(bob) == []
    assert await find(bob, {"_id": ADMINS_ID}, "users") == []


async def test_disabled_user_cannot_sign_in(
    make_user: MakeUser, admin: JsonClient, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    bob = await make_user("carl", "pw")
    [doc] = await find(admin, {"_id": uid(bob)}, "users")
    await replace(admin, {**doc, "disabled": True}, "users")
    client = await connect()
    message = await refused(client, "signin", username="carl", password="pw")
    assert "disabled" in message
    await refused(client, "signin", jwt=bob.jwt)
    await refused(client, "query", collectionname=COLL, query={}, jwt=bob.jwt)


async def test_user_cannot_disable_another_user(
    alice: JsonClient, bob: JsonClient, admin: JsonClient
) -> None:
    before = await stored(admin, uid(alice), "users")
    assert before is not None
    await refused(
        bob, "updateone", collectionname="users", item={"_id": uid(alice), "disabled": True}
    )
    assert await stored(admin, uid(alice), "users") == before


async def test_usernames_are_lower_cased_and_unique(
    admin: JsonClient, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    reply = await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": "  MixedCase ", "newpassword": "pw"},
    )
    assert reply["result"]["username"] == "mixedcase"
    for username in ("mixedcase", "MIXEDCASE"):
        await refused(
            admin,
            "insertone",
            collectionname="users",
            item={"_type": "user", "username": username, "newpassword": "other"},
        )
    assert len(await find(admin, {"username": "mixedcase"}, "users")) == 1
    client = await connect()
    await client.signin("MixedCase", "pw")
    assert client.user["username"] == "mixedcase"


async def test_renaming_a_user_onto_an_existing_username_is_refused(
    admin: JsonClient, alice: JsonClient, bob: JsonClient
) -> None:
    [doc] = await find(admin, {"_id": uid(bob)}, "users")
    await refused(
        admin, "updateone", collectionname="users", item={**doc, "username": alice.user["username"]}
    )


# -- system fields on insert and update ----------------------------------------------------------


async def test_insert_gives_the_creator_and_admins_full_control(
    alice: JsonClient, bob: JsonClient
) -> None:
    doc = await insert(alice, {"name": "x", "_acl": [{"_id": uid(bob), "rights": READ}]})
    rights = {ace["_id"]: ace["rights"] for ace in doc["_acl"]}
    assert rights == {uid(alice): FULL_CONTROL, ADMINS_ID: FULL_CONTROL, uid(bob): READ}
    assert await ids_found(bob) == {doc["_id"]}


async def test_insert_sets_system_fields_and_ignores_client_values(alice: JsonClient) -> None:
    doc = await insert(
        alice,
        {
            "name": "x",
            "_created": "2000-01-01T00:00:00Z",
            "_createdby": "mallory",
            "_createdbyid": "m",
            "_modifiedby": "mallory",
            "_modifiedbyid": "m",
            "_version": 99,
        },
    )
    me = alice.user
    assert (doc["_createdby"], doc["_createdbyid"]) == (me["name"], me["_id"])
    assert (doc["_modifiedby"], doc["_modifiedbyid"]) == (me["name"], me["_id"])
    assert doc["_version"] == 0
    assert doc["_type"] == "unknown"
    assert doc["_created"] == doc["_modified"]
    assert not doc["_created"].startswith("2000")
    [again] = await find(alice, {"_id": doc["_id"]})
    assert again == doc


async def test_version_counts_real_changes_only(alice: JsonClient, secret: dict[str, Any]) -> None:
    [doc] = await find(alice, {"_id": secret["_id"]})
    same = await replace(alice, doc)
    assert same["_version"] == 0
    assert same["_modified"] == secret["_modified"]
    changed = await replace(alice, {**doc, "value": 1})
    assert changed["_version"] == 1
    assert changed["_created"] == secret["_created"]
    assert changed["_createdbyid"] == uid(alice)
    again = await replace(alice, changed)
    assert again["_version"] == 1
    reply = await alice.call(
        "updateone", collectionname=COLL, query={"_id": secret["_id"]}, item={"$set": {"value": 2}}
    )
    assert reply["result"]["_version"] == 2


async def test_replace_cannot_forge_creation_fields(
    alice: JsonClient, secret: dict[str, Any]
) -> None:
    [doc] = await find(alice, {"_id": secret["_id"]})
    result = await replace(
        alice, {**doc, "value": 5, "_createdbyid": "m", "_createdby": "mallory", "_version": 99}
    )
    assert (result["_createdbyid"], result["_createdby"], result["_version"]) == (
        secret["_createdbyid"],
        secret["_createdby"],
        1,
    )


async def test_operator_updates_cannot_touch_system_fields(
    alice: JsonClient, secret: dict[str, Any], unchanged: Any
) -> None:
    updates: list[dict[str, Any]] = [
        {"$set": {"_acl": []}},
        {"$set": {"_acl.0.rights": 0}},
        {"$inc": {"_version": 5}},
        {"$unset": {"_createdby": ""}},
        {"$set": {"_id": "other"}},
    ]
    for update in updates:
        message = await refused(
            alice, "updateone", collectionname=COLL, query={"_id": secret["_id"]}, item=update
        )
        assert "may not change" in message
    await unchanged()


# -- admins -------------------------------------------------------------------------------------


async def test_admin_sees_and_changes_everything(
    admin: JsonClient, alice: JsonClient, bob: JsonClient, secret: dict[str, Any]
) -> None:
    own = await insert(bob, {"name": "bob's"})
    assert await ids_found(admin) == {secret["_id"], own["_id"]}
    assert await count(admin) == 2
    assert {d["_id"] for d in await aggregate(admin, [{"$match": {}}])} == {
        secret["_id"],
        own["_id"],
    }
    await admin.call(
        "updateone", collectionname=COLL, query={"_id": secret["_id"]}, item={"$set": {"value": 0}}
    )
    reply = await admin.call("deleteone", collectionname=COLL, id=own["_id"])
    assert reply["affectedrows"] == 1


async def test_admin_graphlookup_into_users_hides_password_hashes(admin: JsonClient) -> None:
    await admin.call("insertone", collectionname="entities", item={"name": "start", "ref": "admin"})
    reply = await admin.call(
        "aggregate",
        collectionname="entities",
        aggregates=[
            {
                "$graphLookup": {
                    "from": "users",
                    "startWith": "$ref",
                    "connectFromField": "username",
                    "connectToField": "username",
                    "as": "found",
                }
            },
        ],
    )
    found = reply["result"][0]["found"]
    assert found and found[0]["username"] == "admin"
    assert "passwordhash" not in json.dumps(reply)


@pytest.mark.parametrize("collection", ["fs.files", "files", "fs.chunks"])
async def test_file_store_collections_are_not_written_by_document_commands(
    admin: JsonClient, collection: str
) -> None:
    with pytest.raises(ReplyError, match="file store"):
        await admin.call("insertone", collectionname=collection, item={"filename": "x"})
    with pytest.raises(ReplyError, match="file store"):
        await admin.call("deletemany", collectionname=collection, query={})


async def test_roles_cannot_hold_usernames(admin: JsonClient) -> None:
    reply = await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "role", "name": "squatters", "username": "futureuser"},
    )
    assert "username" not in reply["result"]
