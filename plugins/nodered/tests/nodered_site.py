"""Helpers the Node-RED end-to-end tests share (imported as ``nodered_site``): a running
server with the process runtime and ways to open clients and users on it."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from typing import Any

from iapflow.testing import JsonClient

V2 = {"Node-RED-API-Version": "v2"}


class Site:
    """A running server with the process runtime, and ways to open clients to it."""

    def __init__(self, stack: AsyncExitStack, base: str) -> None:
        self.stack = stack
        self.url = base + "/ws"

    async def client(self) -> JsonClient:
        return await self.stack.enter_async_context(JsonClient(self.url))

    async def user(self, admin: JsonClient, *roles: str) -> JsonClient:
        name = f"nre{uuid.uuid4().hex[:8]}"
        reply = await admin.call(
            "insertone",
            collectionname="users",
            item={"_type": "user", "username": name, "name": name, "newpassword": "pw"},
        )
        for role in roles:
            await admin.call(
                "updateone",
                collectionname="users",
                query={"_id": role},
                item={"$push": {"members": {"_id": reply["result"]["_id"], "name": name}}},
            )
        client = await self.client()
        await client.signin(name, "pw")
        return client


async def running(client: JsonClient, within: float = 180.0) -> dict[str, Any]:
    """Wait until the signed-in user's instance runs; fail with its log when it crashed."""
    pod: dict[str, Any] = {}
    for _ in range(int(within * 10)):
        pod = (await client.call("getnoderedinstance"))["result"] or {}
        if pod.get("state") == "running":
            return pod
        if pod.get("state") == "crashed":
            log = (await client.call("getnoderedinstancelog", lines=80))["result"]
            raise AssertionError(f"instance crashed: {pod.get('reason')}\n{log}")
        await asyncio.sleep(0.1)
    log = (await client.call("getnoderedinstancelog", lines=80))["result"]
    raise AssertionError(f"instance not running: {pod}\n{log}")
