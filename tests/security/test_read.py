"""Attacker goal: read what the attacker may not read.

The first review read another user's file by listing its id in an own work item and finishing
the item into a chained queue (the copy carried the bytes), read documents shared with a deleted
role by creating a role with that role's ``_id``, and learned from a duplicate-key error that a
hidden document exists, with the store's database and index names. Each attack runs over the
JSON websocket and over gRPC.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from attack import STORE_INTERNALS, Client, Login, NewUser, b64, bobs_item, refused, result, uid

from iapflow.testing import JsonClient

COLL = "secrets"


async def test_finishing_an_item_copies_only_the_files_that_belong_to_it(
    two: dict[str, Any], admin: JsonClient
) -> None:
    bob_json = two["bob_json"]
    mine = await bobs_item(two, [{"filename": "own.txt", "file": b64(b"bob's own")}])
    # Even a reference the item's rules let through (an admin's edit) is not copied.
    forged = {"_id": two["secret"], "name": "s", "filename": "s.txt"}
    await admin.call(
        "updatedocument", collectionname="workitems", query={"_id": mine["_id"]},
        item={"$push": {"files": forged}},
    )  # fmt: skip
    await bob_json.call("updateworkitem", _id=mine["_id"], state="successful")
    copy = (await bob_json.call("popworkitem", wiqid=two["done"]["_id"]))["result"]
    assert [f["filename"] for f in copy["files"]] == ["own.txt"]
    got = await bob_json.call("getfile", id=copy["files"][0]["_id"])
    assert base64.b64decode(got["file"]) == b"bob's own"


@pytest.fixture
async def alice_and_bob(
    new_user: NewUser, login: Login, connect: Callable[..., Awaitable[JsonClient]]
) -> tuple[JsonClient, Client]:
    """alice on JSON, bob (the attacker) on the test's transport."""
    await new_user("alice")
    await new_user("bob")
    alice = await connect()
    await alice.signin("alice", "secret")
    return alice, await login("bob")


async def test_a_deleted_roles_id_never_comes_back(
    alice_and_bob: tuple[JsonClient, Client], admin: JsonClient
) -> None:
    alice, bob = alice_and_bob
    shared: list[str] = []
    for how in ("deleteone", "deletemany"):
        role = (
            await alice.call(
                "insertone",
                collectionname="users",
                item={"_type": "role", "name": f"team-{how}", "members": [{"_id": uid(alice)}]},
            )
        )["result"]
        doc = await alice.call(
            "insertone",
            collectionname=COLL,
            item={"secret": how, "_acl": [{"_id": role["_id"], "rights": 2}]},
        )
        shared.append(doc["result"]["_id"])
        if how == "deleteone":
            await alice.call("deleteone", collectionname="users", id=role["_id"])
        else:
            await alice.call("deletemany", collectionname="users", query={"_id": role["_id"]})
        says = await refused(
            bob,
            "insertone",
            collectionname="users",
            item={
                "_type": "role",
                "_id": role["_id"],
                "name": "mine",
                "members": [{"_id": uid(bob)}],
            },
        )
        assert "server chooses the _id" in says
        says = await refused(  # not even an admin gets the id again
            admin,
            "insertone",
            collectionname="users",
            item={"_type": "role", "_id": role["_id"], "name": "again"},
        )
        assert "never given out again" in says
    found = await bob.call("query", collectionname=COLL, query={})
    assert result(found) == []


async def test_restoring_a_deleted_role_brings_the_same_principal_back(
    new_user: NewUser, admin: JsonClient, connect: Callable[..., Awaitable[JsonClient]]
) -> None:
    await new_user("alice")
    alice = await connect()
    await alice.signin("alice", "secret")
    role = (
        await alice.call(
            "insertone",
            collectionname="users",
            item={"_type": "role", "name": "returning", "members": [{"_id": uid(alice)}]},
        )
    )["result"]
    doc = await admin.call(
        "insertone", collectionname=COLL,
        item={"x": 1, "_acl": [{"_id": role["_id"], "rights": 2}]},
    )  # fmt: skip
    await alice.call("deleteone", collectionname="users", id=role["_id"])
    await alice.call("restoredocument", collectionname="users", id=role["_id"])
    assert [d["_id"] for d in (await alice.call("query", collectionname=COLL))["result"]] == [
        doc["result"]["_id"]
    ]
    # the role is back under its own id; a second one with that id is a plain duplicate
    says = await refused(
        admin, "insertone", collectionname="users",
        item={"_type": "role", "_id": role["_id"], "name": "twin"},
    )  # fmt: skip
    assert "duplicate key" in says


async def test_errors_do_not_reveal_the_store_or_other_users_data(
    alice_and_bob: tuple[JsonClient, Client], mongo_storage: dict[str, Any]
) -> None:
    alice, bob = alice_and_bob
    hidden = await alice.call(
        "insertone", collectionname=COLL, item={"card": "4111-1111", "_acl": []}
    )
    hidden_id = hidden["result"]["_id"]
    messages = [
        await refused(bob, "insertone", collectionname=COLL, item={"_id": hidden_id, "x": 1}),
        await refused(bob, "query", collectionname=COLL, query={"a": {"$nosuch": 1}}),
        await refused(bob, "aggregate", collectionname=COLL, aggregates=[{"$nosuch": {}}]),
        await refused(
            bob, "insertmany", collectionname=COLL, items=[{"_id": "fresh"}, {"_id": hidden_id}]
        ),
    ]
    assert messages[0].startswith("duplicate key: ") and "_id" in messages[0]
    for message in messages:
        shown = [part for part in STORE_INTERNALS if part in message]
        assert not shown, message
        assert mongo_storage["database"] not in message and "4111" not in message, message
    # the refused insertmany left nothing behind
    assert result(await bob.call("query", collectionname=COLL, query={})) == []
