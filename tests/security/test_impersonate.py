"""Attacker goal: act as someone else.

The first review impersonated users created by a deleted admin, by creating a role with the
deleted admin's ``_id`` (its full-control entries on those users then granted the role's
members update right, which is what impersonation needs), and kept using tokens and open
connections after an admin had reset the password. Now principal ids never come back, and a
password change or a disable ends every earlier token and connection, on every server process
sharing the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from attack import Client, Login, NewUser, refused, uid

from iapflow.testing import JsonClient, ReplyError, make_test_config, serving

ADMINS = "5a1702fa245d9013697656fb"
Connect = Callable[..., Awaitable[JsonClient]]


async def closed_within(client: Client, seconds: float) -> bool:
    try:
        await asyncio.wait_for(client.closed.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def reset_password(admin: JsonClient, user_id: str, password: str) -> None:
    me = (await admin.call("query", collectionname="users", query={"_id": user_id}))["result"][0]
    await admin.call("updateone", collectionname="users", item={**me, "newpassword": password})


async def test_users_made_by_a_deleted_admin_cannot_be_impersonated_through_its_id(
    new_user: NewUser, login: Login, admin: JsonClient, connect: Connect
) -> None:
    helper_id = await new_user("helper")
    roles = await admin.call("query", collectionname="users", query={"_id": ADMINS})
    admins = roles["result"][0]
    members = [*admins["members"], {"_id": helper_id, "name": "helper"}]
    await admin.call("updateone", collectionname="users", item={**admins, "members": members})
    helper = await connect()
    await helper.signin("helper", "secret")
    made = await helper.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": "made-by-helper", "newpassword": "x"},
    )
    target = made["result"]["_id"]
    await admin.call("deleteone", collectionname="users", id=helper_id)
    await new_user("mallory")
    mallory = await login("mallory")
    says = await refused(
        mallory,
        "insertone",
        collectionname="users",
        item={"_type": "role", "_id": helper_id, "name": "h", "members": [{"_id": uid(mallory)}]},
    )
    assert "server chooses the _id" in says
    impostor = await connect()
    with pytest.raises(ReplyError, match="update right"):
        await impostor.signin("mallory", "secret", impersonate=target)


async def test_a_password_reset_ends_every_earlier_token_and_connection(
    new_user: NewUser, login: Login, admin: JsonClient, connect: Connect, server: str
) -> None:
    alice_id = await new_user("alice", "old")
    first = await connect()
    await first.signin("alice", "old")
    other = await login("alice", "old")
    long_token = (await first.call("signin", jwt=first.jwt, longtoken=True, validate_only=True))[
        "jwt"
    ]
    await reset_password(admin, alice_id, "new")
    assert await closed_within(first, 5) and await closed_within(other, 5)
    probe = await connect()
    for token in (first.jwt, long_token):
        with pytest.raises(ReplyError, match="token revoked"):
            await probe.call("query", collectionname="users", query={}, jwt=token)
        with pytest.raises(ReplyError, match="token revoked"):
            await probe.signin(jwt=token)
    http = server.replace("ws://", "http://").rsplit("/", 1)[0]
    async with httpx.AsyncClient() as web:
        answer = await web.get(f"{http}/download/x", params={"jwt": long_token})
    assert answer.status_code == 401 and "token revoked" in answer.text
    fresh = await login("alice", "new")
    assert await fresh.call("query", collectionname="users", query={"_id": alice_id})


async def test_changing_ones_own_password_keeps_that_connection_only(
    new_user: NewUser, login: Login, connect: Connect
) -> None:
    await new_user("carol", "old")
    mine = await connect()
    await mine.signin("carol", "old")
    elsewhere = await login("carol", "old")
    before = mine.jwt
    me = (await mine.call("query", collectionname="users", query={"_id": uid(mine)}))["result"][0]
    await mine.call("updateone", collectionname="users", item={**me, "newpassword": "new"})
    command, pushed = await asyncio.wait_for(mine.pushes.get(), 5)
    assert command == "refreshtoken" and pushed["jwt"] != before
    assert await closed_within(elsewhere, 5)
    assert not mine.closed.is_set()
    await mine.call("query", collectionname="users", query={})  # still signed in
    with pytest.raises(ReplyError, match="token revoked"):
        await mine.call("query", collectionname="users", query={}, jwt=before)


async def test_disabling_ends_tokens_for_good(
    new_user: NewUser, login: Login, admin: JsonClient, connect: Connect
) -> None:
    dave_id = await new_user("dave")
    dave = await login("dave")
    token = dave.jwt
    await admin.call(
        "updateone",
        collectionname="users",
        query={"_id": dave_id},
        item={"$set": {"disabled": True}},
    )
    assert await closed_within(dave, 5)
    await admin.call(
        "updateone",
        collectionname="users",
        query={"_id": dave_id},
        item={"$set": {"disabled": False}},
    )
    probe = await connect()
    with pytest.raises(ReplyError, match="token revoked"):
        await probe.signin(jwt=token)  # enabled again, but the old token stays dead
    await login("dave")


async def test_an_impersonation_ends_with_the_impersonators_password(
    new_user: NewUser, admin: JsonClient, connect: Connect
) -> None:
    boss_id = await new_user("boss")
    worker_id = await new_user("worker")
    # boss may update worker's document, so boss may act as worker
    worker = (await admin.call("query", collectionname="users", query={"_id": worker_id}))[
        "result"
    ][0]
    acl = [*worker["_acl"], {"_id": boss_id, "name": "boss", "rights": 65535}]
    await admin.call("updateone", collectionname="users", item={**worker, "_acl": acl})
    acting = await connect()
    await acting.signin("boss", "secret", impersonate=worker_id)
    token = acting.jwt
    await reset_password(admin, boss_id, "changed")
    assert await closed_within(acting, 5)
    probe = await connect()
    with pytest.raises(ReplyError, match="token revoked"):
        await probe.signin(jwt=token)


async def test_a_password_reset_on_one_server_ends_connections_on_another(
    new_user: NewUser,
    admin: JsonClient,
    tmp_path: Path,
    mongo_storage: dict[str, Any],
) -> None:
    alice_id = await new_user("erin")
    replica = make_test_config(
        tmp_path / "replica", mongo_storage, auth={"revocation_check_seconds": 0.2}
    )
    async with serving(replica) as (base, _platform):
        on_replica = JsonClient(base + "/ws")
        await on_replica.connect()
        try:
            await on_replica.signin("erin", "secret")
            token = on_replica.jwt
            await reset_password(admin, alice_id, "other")  # on the first server
            assert await closed_within(on_replica, 5)
            probe = JsonClient(base + "/ws")
            await probe.connect()
            with pytest.raises(ReplyError, match="token revoked"):
                await probe.signin(jwt=token)
            await probe.close()
        finally:
            await on_replica.close()
