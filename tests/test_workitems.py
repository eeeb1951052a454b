"""Work item queues through the JSON protocol, on the real store: queues and their roles,
rights, concurrent pops, retries, business errors, chaining, files, purge, nudges, bad input."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server

MakeUser = Callable[..., Awaitable[JsonClient]]
Connect = Callable[..., Awaitable[JsonClient]]


def unique(prefix: str = "wiq") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def add_queue(client: JsonClient, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", unique())
    reply = await client.call("addworkitemqueue", **fields)
    queue: dict[str, Any] = reply["result"]
    return queue


async def test_queue_crud_and_its_role(make_user: MakeUser, admin: JsonClient) -> None:
    owner = await make_user()
    name = unique()
    queue = await add_queue(
        owner, name=name, maxretries=5, retrydelay=2, initialdelay=0, amqpqueue="robots"
    )
    assert queue["_type"] == "workitemqueue"
    assert (queue["maxretries"], queue["retrydelay"], queue["amqpqueue"]) == (5, 2, "robots")
    roles = await admin.call(
        "query", collectionname="users", query={"_type": "role", "name": f"{name} users"}
    )
    [role] = roles["result"]
    assert queue["usersrole"] == role["_id"]
    assert {m["_id"] for m in role["members"]} == {
        owner.user["_id"],
        "625440c4231309af5f2052cd",  # workitem queue admins
    }
    ace = next(a for a in queue["_acl"] if a["_id"] == role["_id"])
    assert ace["rights"] == 65535

    got = await owner.call("getworkitemqueue", name=name)
    assert got["result"]["_id"] == queue["_id"]
    got = await owner.call("getworkitemqueue", _id=queue["_id"])
    assert got["result"]["name"] == name

    with pytest.raises(ReplyError, match="already exists"):
        await add_queue(owner, name=name)

    updated = await owner.call("updateworkitemqueue", _id=queue["_id"], maxretries=7)
    assert updated["result"]["maxretries"] == 7
    assert updated["result"]["retrydelay"] == 2

    await owner.call("deleteworkitemqueue", wiq=name)
    with pytest.raises(ReplyError, match="not found"):
        await owner.call("getworkitemqueue", name=name)
    roles = await admin.call(
        "query", collectionname="users", query={"_type": "role", "name": f"{name} users"}
    )
    assert roles["result"] == []

    plain = await add_queue(owner, skiprole=True)
    assert plain["usersrole"] == ""


async def test_invoke_right_is_needed_and_the_role_grants_it(make_user: MakeUser) -> None:
    owner = await make_user()
    other = await make_user()
    queue = await add_queue(owner)
    with pytest.raises(ReplyError, match="not found, or you have no access"):
        await other.call("addworkitem", wiq=queue["name"], payload={"a": 1})

    # Read right alone is not enough to add or pop: the error says which right is missing.
    acl = [*queue["_acl"], {"_id": other.user["_id"], "name": "other", "rights": 2}]
    await owner.call("updateworkitemqueue", _id=queue["_id"], _acl=acl)
    with pytest.raises(ReplyError, match="lack the invoke right on work item queue"):
        await other.call("addworkitem", wiq=queue["name"], payload={"a": 1})
    with pytest.raises(ReplyError, match="lack the invoke right"):
        await other.call("popworkitem", wiqid=queue["_id"])

    # Membership of the queue's users role grants everything.
    role = (await owner.call("query", collectionname="users", query={"_id": queue["usersrole"]}))[
        "result"
    ][0]
    role["members"].append({"_id": other.user["_id"], "name": "other"})
    await owner.call("updateone", collectionname="users", item=role)
    added = await other.call("addworkitem", wiq=queue["name"], name="job", payload={"a": 1})
    assert added["result"]["state"] == "new"
    popped = await other.call("popworkitem", wiq=queue["name"])
    assert popped["result"]["_id"] == added["result"]["_id"]
    assert popped["result"]["state"] == "processing"
    assert popped["result"]["userid"] == other.user["_id"]


async def test_items_shape_priority_and_nextrun(admin: JsonClient) -> None:
    queue = await add_queue(admin)
    low = await admin.call("addworkitem", wiqid=queue["_id"], name="late", payload=5, priority=9)
    assert low["result"]["payload"] == {"value": 5}
    assert low["result"]["priority"] == 9
    assert low["result"]["_acl"] == queue["_acl"]
    await admin.call(
        "addworkitem", wiq=queue["name"], name="future", nextrun="2999-01-01T00:00:00Z"
    )
    many = await admin.call(
        "pushworkitems",
        wiq=queue["name"],
        wipriority=1,
        items=[{"name": "a", "payload": {"n": 1}}, {"name": "b", "payload": {"n": 2}}],
    )
    assert [i["priority"] for i in many["items"]] == [1, 1]
    order = []
    for _ in range(4):
        reply = await admin.call("popworkitem", wiq=queue["name"])
        order.append(reply.get("result", {}).get("name"))
    assert order == ["a", "b", "late", None]  # the future item is not due


async def test_300_items_by_10_concurrent_consumers(admin: JsonClient, connect: Connect) -> None:
    queue = await add_queue(admin)
    for start in range(0, 300, 100):
        await admin.call(
            "addworkitems",
            wiqid=queue["_id"],
            items=[{"name": f"job{n}", "payload": {"n": n}} for n in range(start, start + 100)],
        )
    consumers = []
    for _ in range(10):
        client = await connect()
        await client.signin("admin", "admin")
        consumers.append(client)
    seen: list[int] = []

    async def work(client: JsonClient) -> int:
        done = 0
        while True:
            reply = await client.call("popworkitem", wiqid=queue["_id"])
            item = reply.get("result")
            if not item:
                return done
            seen.append(item["payload"]["n"])
            await client.call("updateworkitem", _id=item["_id"], state="successful")
            done += 1

    started = time.monotonic()
    counts = await asyncio.wait_for(asyncio.gather(*(work(c) for c in consumers)), 120)
    elapsed = time.monotonic() - started
    assert sorted(seen) == list(range(300)), "every item exactly once"
    assert sum(counts) == 300
    assert sum(1 for c in counts if c) > 1, "the work was shared"
    left = await admin.call(
        "count", collectionname="workitems", query={"wiqid": queue["_id"], "state": "successful"}
    )
    assert left["result"] == 300
    print(f"300 items by 10 consumers in {elapsed:.1f} s")


async def test_retry_with_delay_up_to_maxretries_then_failed(admin: JsonClient) -> None:
    queue = await add_queue(admin, maxretries=3, retrydelay=0.4)
    item = (await admin.call("addworkitem", wiq=queue["name"], name="flaky"))["result"]
    for attempt in range(1, 3):
        popped = (await admin.call("popworkitem", wiq=queue["name"]))["result"]
        assert popped["_id"] == item["_id"]
        retried = await admin.call(
            "updateworkitem", _id=item["_id"], state="retry", errormessage=f"boom {attempt}"
        )
        assert retried["result"]["state"] == "new"
        assert retried["result"]["retries"] == attempt
        assert retried["result"]["errormessage"] == f"boom {attempt}"
        assert "result" not in await admin.call("popworkitem", wiq=queue["name"]), "not yet due"
        await asyncio.sleep(0.5)
    await admin.call("popworkitem", wiq=queue["name"])
    final = await admin.call("updateworkitem", _id=item["_id"], state="retry")
    assert final["result"]["state"] == "failed"
    assert final["result"]["retries"] == 2

    # ignoremaxretries keeps retrying, an explicit nextrun sets when.
    other = (await admin.call("addworkitem", wiq=queue["name"]))["result"]
    await admin.call("popworkitem", wiq=queue["name"])
    again = await admin.call(
        "updateworkitem",
        _id=other["_id"],
        state="retry",
        ignoremaxretries=True,
        nextrun="2999-01-01T00:00:00Z",
    )
    assert again["result"]["state"] == "new"
    assert again["result"]["nextrun"].startswith("2999-01-01")


async def test_business_errors_are_not_retried_and_chaining(admin: JsonClient) -> None:
    done = await add_queue(admin, name=unique("done"))
    broken = await add_queue(admin, name=unique("broken"))
    queue = await add_queue(
        admin, maxretries=5, success_wiq=done["name"], failed_wiqid=broken["_id"]
    )
    assert (queue["success_wiqid"], queue["failed_wiq"]) == (done["_id"], broken["name"])
    good = (await admin.call("addworkitem", wiq=queue["name"], name="good", payload={"x": 1}))[
        "result"
    ]
    bad = (await admin.call("addworkitem", wiq=queue["name"], name="bad", payload={"x": 2}))[
        "result"
    ]
    await admin.call("popworkitem", wiq=queue["name"])
    await admin.call("popworkitem", wiq=queue["name"])
    result = await admin.call(
        "updateworkitem",
        _id=bad["_id"],
        state="retry",
        errortype="business",
        errormessage="invalid invoice",
    )
    assert result["result"]["state"] == "failed"
    assert result["result"]["retries"] == 0
    ok = await admin.call("updateworkitem", _id=good["_id"], state="successful", payload={"y": 3})
    assert ok["result"]["state"] == "successful"

    chained = (await admin.call("popworkitem", wiq=done["name"]))["result"]
    assert (chained["name"], chained["payload"], chained["state"]) == (
        "good",
        {"y": 3},
        "processing",
    )
    assert chained["_id"] != good["_id"]
    failed = (await admin.call("popworkitem", wiqid=broken["_id"]))["result"]
    assert (failed["name"], failed["payload"], failed["retries"]) == ("bad", {"x": 2}, 0)


async def test_files_are_attached_copied_and_deleted_with_the_item(admin: JsonClient) -> None:
    done = await add_queue(admin, name=unique("done"))
    queue = await add_queue(admin, success_wiqid=done["_id"])
    plain = b"hello work item"
    packed = zlib.compress(b"compressed content " * 50)
    item = (
        await admin.call(
            "addworkitem",
            wiq=queue["name"],
            name="with files",
            files=[
                {"filename": "a.txt", "file": base64.b64encode(plain).decode()},
                {
                    "filename": "b.txt",
                    "file": base64.b64encode(packed).decode(),
                    "compressed": True,
                },
            ],
        )
    )["result"]
    assert [f["filename"] for f in item["files"]] == ["a.txt", "b.txt"]
    first = await admin.call("getfile", id=item["files"][0]["_id"])
    assert base64.b64decode(first["file"]) == plain
    assert first["metadata"]["wiqid"] == queue["_id"]
    assert first["metadata"]["wi"] == item["_id"]
    second = await admin.call("getfile", id=item["files"][1]["_id"])
    assert base64.b64decode(second["file"]) == b"compressed content " * 50

    # Finished: the copy in the success queue has its own copies of the files.
    await admin.call("popworkitem", wiq=queue["name"])
    await admin.call("updateworkitem", _id=item["_id"], state="successful")
    chained = (await admin.call("popworkitem", wiq=done["name"]))["result"]
    copied = chained["files"][0]["_id"]
    assert copied != item["files"][0]["_id"]
    assert base64.b64decode((await admin.call("getfile", id=copied))["file"]) == plain

    await admin.call("deleteworkitem", _id=item["_id"])
    for entry in item["files"]:
        with pytest.raises(ReplyError, match="not found"):
            await admin.call("getfile", id=entry["_id"])
    assert (await admin.call("getfile", id=copied))["file"]
    with pytest.raises(ReplyError, match="not found"):
        await admin.call("deleteworkitem", _id=item["_id"])


async def test_delete_needs_invoke_and_delete(make_user: MakeUser) -> None:
    owner = await make_user()
    other = await make_user()
    queue = await add_queue(owner)
    acl = [*queue["_acl"], {"_id": other.user["_id"], "name": "other", "rights": 2 | 16}]
    await owner.call("updateworkitemqueue", _id=queue["_id"], _acl=acl)
    item = (await owner.call("addworkitem", wiq=queue["name"]))["result"]
    with pytest.raises(ReplyError, match="lack the delete right"):
        await other.call("deleteworkitem", _id=item["_id"])
    await owner.call("deleteworkitem", _id=item["_id"])


async def test_two_servers_racing_to_add_a_queue_create_it_once(
    tmp_path: Path, mongo_storage: dict[str, Any], admin: JsonClient
) -> None:
    """Two API replicas on one store, the same new queue name added on both at once: one
    queue, one ``<name> users`` role, and the other caller told the name is taken."""
    async with running_server(make_test_config(tmp_path / "replica", mongo_storage)) as base:
        other = JsonClient(base + "/ws")
        await other.connect()
        try:
            await other.signin("admin", "admin")
            for _ in range(5):
                name = f"race{uuid.uuid4().hex[:8]}"
                outcomes = await asyncio.gather(
                    admin.call("addworkitemqueue", name=name),
                    other.call("addworkitemqueue", name=name),
                    return_exceptions=True,
                )
                refused = [o for o in outcomes if isinstance(o, BaseException)]
                assert len(refused) == 1, outcomes
                assert "already exists" in str(refused[0])
                queues = await admin.call(
                    "query", collectionname="mq", query={"_type": "workitemqueue", "name": name}
                )
                assert len(queues["result"]) == 1
                roles = await admin.call(
                    "query", collectionname="users", query={"name": f"{name} users"}
                )
                assert len(roles["result"]) == 1
        finally:
            await other.close()


async def test_purge_and_delete_of_a_queue_with_items(admin: JsonClient) -> None:
    queue = await add_queue(admin)
    item = (
        await admin.call(
            "addworkitems",
            wiq=queue["name"],
            items=[
                {
                    "name": "f",
                    "files": [{"filename": "f.txt", "file": base64.b64encode(b"x").decode()}],
                },
                {"name": "g"},
            ],
        )
    )["items"][0]
    with pytest.raises(ReplyError, match="still holds 2 work item"):
        await admin.call("deleteworkitemqueue", _id=queue["_id"])
    await admin.call("updateworkitemqueue", _id=queue["_id"], purge=True)
    count = await admin.call("count", collectionname="workitems", query={"wiqid": queue["_id"]})
    assert count["result"] == 0
    with pytest.raises(ReplyError, match="not found"):
        await admin.call("getfile", id=item["files"][0]["_id"])
    audit = await admin.call(
        "query", collectionname="audit", query={"_type": "workitemqueue", "wiqid": queue["_id"]}
    )
    assert audit["result"][0]["action"] == "purge"

    await admin.call("addworkitem", wiq=queue["name"])
    await admin.call("deleteworkitemqueue", _id=queue["_id"], purge=True)
    count = await admin.call("count", collectionname="workitems", query={"wiqid": queue["_id"]})
    assert count["result"] == 0


async def test_consumers_of_the_amqpqueue_are_nudged(admin: JsonClient, connect: Connect) -> None:
    robot = await connect()
    await robot.signin("admin", "admin")
    nudges: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_push(command: str, data: dict[str, Any], push_id: str) -> None:
        if command == "queuemessage":
            nudges.put_nowait(data["data"])
            await robot.answer(push_id, "queuemessage", {})

    robot.on_push = on_push
    listen = unique("robots")
    await robot.call("registerqueue", queuename=listen)
    queue = await add_queue(admin, amqpqueue=listen, retrydelay=1)
    item = (await admin.call("addworkitem", wiq=queue["name"]))["result"]
    nudge = await asyncio.wait_for(nudges.get(), 10)
    assert (nudge["wiq"], nudge["wiqid"]) == (queue["name"], queue["_id"])

    await robot.call("popworkitem", wiqid=queue["_id"])
    await admin.call("updateworkitem", _id=item["_id"], state="retry")
    started = time.monotonic()
    nudge = await asyncio.wait_for(nudges.get(), 10)
    assert nudge["wiqid"] == queue["_id"]
    assert time.monotonic() - started >= 0.5, "nudged when the retry became due"
    assert (await robot.call("popworkitem", wiqid=queue["_id"]))["result"]["_id"] == item["_id"]


@pytest.mark.parametrize(
    ("command", "data", "message"),
    [
        ("addworkitemqueue", {}, "name is required"),
        ("addworkitemqueue", {"name": "q", "maxretries": 0}, "maxretries must be a number"),
        ("addworkitemqueue", {"name": "q", "retrydelay": "soon"}, "retrydelay must be a number"),
        ("addworkitemqueue", {"name": "q", "_acl": "all"}, "_acl must be a list"),
        ("addworkitemqueue", {"name": "q", "success_wiq": "nope-x"}, "not found"),
        ("getworkitemqueue", {}, "name the work item queue"),
        ("addworkitem", {"name": "x"}, "name the work item queue with wiqid or wiq"),
        ("addworkitem", {"wiq": "no-such-queue-x"}, "not found"),
        ("addworkitems", {"wiq": "no-such-queue-x", "items": "x"}, "items must be"),
        ("popworkitem", {}, "name the work item queue"),
        ("updateworkitem", {}, "_id is required"),
        ("updateworkitem", {"_id": "nope"}, "not found"),
        ("deleteworkitem", {"_id": 5}, "_id is required"),
    ],
)
async def test_bad_input_gets_clear_errors(
    admin: JsonClient, command: str, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ReplyError, match=message):
        await admin.call(command, **data)


async def test_bad_item_fields(admin: JsonClient) -> None:
    queue = await add_queue(admin)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"priority": "high"}, "priority must be a whole number"),
        ({"nextrun": "tomorrow"}, "nextrun must be an ISO-8601 time"),
        ({"payload": {"$where": 1}}, "not allowed"),
        ({"files": "x"}, "files must be a list"),
        ({"files": [{"filename": "a"}]}, "needs its content as a base64"),
        ({"files": [{"filename": "a", "file": "!!"}]}, "not valid base64"),
    ]
    for fields, message in cases:
        with pytest.raises(ReplyError, match=message):
            await admin.call("addworkitem", wiq=queue["name"], **fields)
    assert (await admin.call("count", collectionname="workitems", query={"wiqid": queue["_id"]}))[
        "result"
    ] == 0
    item = (await admin.call("addworkitem", wiq=queue["name"]))["result"]
    with pytest.raises(ReplyError, match="state must be one of"):
        await admin.call("updateworkitem", _id=item["_id"], state="done")
    with pytest.raises(ReplyError, match="errortype must be application or business"):
        await admin.call("updateworkitem", _id=item["_id"], state="retry", errortype="fatal")
    assert (await admin.call("popworkitem", wiq=queue["name"]))["result"]["_id"] == item["_id"]


async def test_generic_delete_leaves_work_item_queues_alone(admin: JsonClient) -> None:
    queue = (
        await admin.call(
            "addworkitemqueue", name="keepme", maxretries=1, retrydelay=0, initialdelay=0
        )
    )["result"]
    with pytest.raises(ReplyError, match="use deleteworkitemqueue"):
        await admin.call("deleteone", collectionname="mq", id=queue["_id"])
    assert (await admin.call("deletemany", collectionname="mq", query={"name": "keepme"}))[
        "affectedrows"
    ] == 0
    assert (await admin.call("getworkitemqueue", name="keepme"))["result"]["_id"] == queue["_id"]
