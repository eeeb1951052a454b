"""iapflow-hello's own tests, written the way docs/plugins.md shows a plugin author: iapflow's
pytest plugin serves every installed plugin (this one included) on a fresh database from
iapflow-mongo's pytest plugin, and hands out signed-in clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iapflow.testing import JsonClient, ReplyError


@pytest.fixture
def iapflow_config_overrides() -> dict[str, dict[str, Any]]:
    return {"hello": {"greeting": "Hi", "max_name_length": 10}}


async def test_hello_greets_with_the_configured_greeting(iapflow_admin: JsonClient) -> None:
    reply = await iapflow_admin.call("hello", name="world")
    assert reply["result"] == "Hi, world!"
    assert reply["count"] == 1


async def test_each_user_counts_only_their_own_greetings(
    iapflow_user: Callable[..., Awaitable[JsonClient]],
) -> None:
    alice, bob = await iapflow_user("alice"), await iapflow_user("bob")
    await alice.call("hello")
    assert (await alice.call("hello"))["count"] == 2
    reply = await bob.call("hello")
    assert (reply["result"], reply["count"]) == ("Hi, bob!", 1)


async def test_a_long_name_is_refused(iapflow_admin: JsonClient) -> None:
    with pytest.raises(ReplyError, match="at most 10 characters"):
        await iapflow_admin.call("hello", name="x" * 11)
