"""Sign-in: passwords, tokens, long tokens, validate_only, impersonation, refresh pushes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iapflow.testing import JsonClient, ReplyError

Connect = Callable[..., Awaitable[JsonClient]]
MakeUser = Callable[..., Awaitable[JsonClient]]


async def test_wrong_password_and_unknown_user_are_refused_alike(connect: Connect) -> None:
    client = await connect()
    with pytest.raises(ReplyError) as wrong:
        await client.signin("admin", "nope")
    with pytest.raises(ReplyError) as unknown:
        await client.signin("nobody", "nope")
    assert str(wrong.value) == str(unknown.value) == "unknown username or wrong password"
    await client.signin("admin", "admin")  # the connection still works


async def test_username_is_case_insensitive(connect: Connect, make_user: MakeUser) -> None:
    await make_user("Mixed", "pw")
    client = await connect()
    reply = await client.signin("MIXED", "pw")
    assert reply["user"]["username"] == "mixed"


async def test_signin_with_jwt_on_another_connection(admin: JsonClient, connect: Connect) -> None:
    other = await connect()
    reply = await other.signin(jwt=admin.jwt)
    assert reply["user"]["_id"] == admin.user["_id"]
    assert reply["jwt"]  # a fresh token


async def test_validate_only_does_not_bind_the_connection(connect: Connect) -> None:
    client = await connect()
    reply = await client.signin("admin", "admin", validate_only=True)
    assert reply["jwt"]
    with pytest.raises(ReplyError, match="Not signed in"):
        await client.call("count", collectionname="entities")


async def test_longtoken_lives_longer(connect: Connect) -> None:
    from joserfc import jwt as jose

    client = await connect()
    short = (await client.signin("admin", "admin"))["jwt"]
    long = (await client.signin("admin", "admin", longtoken=True))["jwt"]
    short_exp = jose.decode(short, _key()).claims["exp"]
    long_exp = jose.decode(long, _key()).claims["exp"]
    assert long_exp - short_exp > 300 * 86400


def _key() -> Any:
    from joserfc.jwk import OctKey

    from iapflow.testing.server import TEST_SECRET

    return OctKey.import_key(TEST_SECRET.encode())


async def test_disabled_user_cannot_sign_in(
    admin: JsonClient, make_user: MakeUser, connect: Connect
) -> None:
    bob = await make_user("bob", "pw")
    user = (await admin.call("query", collectionname="users", query={"username": "bob"}))["result"][
        0
    ]
    await admin.call("updateone", collectionname="users", item={**user, "disabled": True})
    with pytest.raises(ReplyError, match="disabled"):
        await (await connect()).signin("bob", "pw")
    with pytest.raises(ReplyError, match="disabled"):  # nor with the token it already had
        await (await connect()).signin(jwt=bob.jwt)


async def test_newpassword_sets_a_password_and_is_never_echoed(
    admin: JsonClient, make_user: MakeUser, connect: Connect
) -> None:
    carol = await make_user("carol", "old")
    me = (await carol.call("query", collectionname="users", query={"_id": carol.user["_id"]}))[
        "result"
    ][0]
    reply = await carol.call("updateone", collectionname="users", item={**me, "newpassword": "new"})
    assert "newpassword" not in reply and "passwordhash" not in reply["result"]
    with pytest.raises(ReplyError):
        await (await connect()).signin("carol", "old")
    await (await connect()).signin("carol", "new")


async def test_impersonation_needs_update_right_on_the_target(
    admin: JsonClient, make_user: MakeUser, connect: Connect
) -> None:
    dave = await make_user("dave", "pw")
    erin = await make_user("erin", "pw")
    # An admin has update right on every user: it can act as dave.
    client = await connect()
    reply = await client.signin("admin", "admin", impersonate=dave.user["_id"])
    assert reply["user"]["_id"] == dave.user["_id"]
    assert reply["user"]["impostor"] == admin.user["_id"]
    mine = await client.call("insertone", collectionname="entities", item={"by": "impostor"})
    assert mine["result"]["_createdbyid"] == dave.user["_id"]
    # ...and stop acting as dave.
    back = await client.signin(jwt=client.jwt, impersonate="-1")
    assert back["user"]["_id"] == admin.user["_id"]
    # erin has no update right on dave's user document.
    with pytest.raises(ReplyError, match="update right"):
        await erin.signin(jwt=erin.jwt, impersonate=dave.user["_id"])


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    # Short tokens, refreshed 5 s after sign-in (half the lifetime).
    return {"auth": {"token_lifetime_seconds": 10, "refresh_before_seconds": 5}}


async def test_short_token_is_refreshed_by_a_push_before_it_expires(admin: JsonClient) -> None:
    command, data = await asyncio.wait_for(admin.pushes.get(), 9)
    assert command == "refreshtoken"
    assert data["user"]["_id"] == admin.user["_id"]
    assert data["jwt"] != admin.jwt
    # Past the first token's expiry the connection still works on the refreshed one.
    await asyncio.sleep(5)
    assert (await admin.call("count", collectionname="entities"))["result"] == 0


async def test_first_signin_is_not_admin_by_default(connect: Connect) -> None:
    with pytest.raises(ReplyError):
        await (await connect()).signin("newcomer", "pw")


async def test_disabling_a_user_closes_its_sockets(admin: JsonClient, make_user: MakeUser) -> None:
    frank = await make_user("frank", "pw")
    user = (await admin.call("query", collectionname="users", query={"username": "frank"}))[
        "result"
    ][0]
    await admin.call("updateone", collectionname="users", item={**user, "disabled": True})
    await asyncio.wait_for(frank.closed.wait(), 2)
    assert frank.ws.close_code == 1008


async def test_disabling_users_in_bulk_closes_their_sockets(
    admin: JsonClient, make_user: MakeUser
) -> None:
    gina = await make_user("gina", "pw")
    await admin.call(
        "updatemany",
        collectionname="users",
        query={"username": "gina"},
        item={"$set": {"disabled": True}},
    )
    await asyncio.wait_for(gina.closed.wait(), 2)
    assert not admin.closed.is_set()
