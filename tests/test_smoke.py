"""The shortest path through the platform: sign in, insert, query."""

from __future__ import annotations

from iapflow.testing import JsonClient


async def test_admin_inserts_and_queries(admin: JsonClient) -> None:
    inserted = await admin.call("insertone", collectionname="entities", item={"name": "first"})
    assert inserted["result"]["name"] == "first"
    found = await admin.call("query", collectionname="entities", query={"name": "first"})
    assert [d["_id"] for d in found["result"]] == [inserted["result"]["_id"]]
