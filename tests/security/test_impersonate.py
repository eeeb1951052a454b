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
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from attack import Client, Login, NewUser, free_port, refused, uid

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


async def test_tokens_never_reach_the_access_log(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    port = free_port()
    config = tmp_path / "iapflow.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "{tmp_path / "data"}"\n'
        'log_level = "info"\n'
        f'[storage]\nurl = "{mongo_storage["url"]}"\ndatabase = "{mongo_storage["database"]}"\n'
        '[auth]\nadmin_username = "admin"\nadmin_password = "admin"\nbcrypt_rounds = 4\n'
        "[grpc]\nport = 0\n"
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "iapflow.cli", "serve", "--config", str(config),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        for _ in range(300):
            try:
                async with JsonClient(f"ws://127.0.0.1:{port}/ws") as admin:
                    reply = await admin.signin("admin", "admin")
                    break
            except OSError:
                await asyncio.sleep(0.1)
        token = reply["jwt"]
        async with JsonClient(f"ws://127.0.0.1:{port}/ws") as admin:
            await admin.signin("admin", "admin")
            saved = await admin.call("savefile", filename="a.txt", file="aGk=")
            link = (await admin.call("getdownloadlink", id=saved["id"]))["url"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:
            for query in (f"jwt={token}", f"token={token}", "ticket=" + link.split("ticket=")[1]):
                answer = await web.get(f"/download/{saved['id']}?{query}")
                assert answer.status_code == 200 and answer.content == b"hi"
            await web.post(f"/upload?filename=b.txt&jwt={token}", content=b"x")
    finally:
        serve.send_signal(signal.SIGINT)
        await asyncio.wait_for(serve.wait(), 30)
    text = log.read_text()
    assert "/download/" in text and "jwt=***" in text and "ticket=***" in text, text[-2000:]
    assert token not in text and token.split(".")[2] not in text
    assert link.split("ticket=")[1] not in text


async def test_a_download_link_is_for_one_file_one_user_and_a_few_minutes(
    new_user: NewUser, connect: Connect, admin: JsonClient, server: str
) -> None:
    await new_user("fay")
    fay = await connect()
    await fay.signin("fay", "secret")
    mine = await fay.call("savefile", filename="m.txt", file="bWluZQ==", metadata={"_acl": []})
    other = await fay.call("savefile", filename="o.txt", file="b3RoZXI=")
    link = await fay.call("getdownloadlink", id=mine["id"])
    assert 290 <= link["expires"] - time.time() <= 300
    ticket = link["url"].split("ticket=")[1]
    http = server.replace("ws://", "http://").rsplit("/", 1)[0]
    async with httpx.AsyncClient(base_url=http) as web:
        assert (await web.get(link["url"])).content == b"mine"
        wrong = await web.get(f"/download/{other['id']}?ticket={ticket}")
        assert wrong.status_code == 401 and "another file" in wrong.text
        # a ticket is no session token: it signs nothing in
        with pytest.raises(ReplyError, match="invalid token"):
            await (await connect()).signin(jwt=ticket)
        # nor does a file the user may not read get one
        assert "not found" in await refused(admin, "getdownloadlink", id="nosuchfile")
        await reset_password(admin, fay.user["_id"], "changed")
        revoked = await web.get(link["url"])
        assert revoked.status_code == 401 and "token revoked" in revoked.text
