"""Drive the official PyPI ``openiap`` 0.0.37 client against a server; print one JSON report.

Run with the interpreter of the separate venv the tests create (``.venv-openiap``): that client
needs ``websockets<14`` and installs top-level ``proto`` modules, so it cannot share iapflow's
venv. Usage: ``python pyapi_driver.py <mode> <url> <username> <password> <file id or ->``.

Modes: ``full`` (everything, with extra connections in this process), ``single`` (one
connection only: pyapi over gRPC keeps its connection id in a class attribute, so a second
Client in the same process closes the first one's stream; the tests run the others as separate
processes), ``worker`` (sign in, serve the queue ``pytestq``, print a ``ready`` report and stay
until killed: the other end of ``single``'s request/reply) and ``signin`` (sign in; a password
of ``-`` signs in with the username as a jwt).
Every step's outcome goes into the report; a failing step records its error and the rest go on.
The process ends with ``os._exit``: the client's threads never finish.
"""

import asyncio
import json
import os
import sys
import tempfile
import traceback

from openiap import Client

MODE, URL, USERNAME, PASSWORD, FILE_ID = sys.argv[1:6]
report: dict = {}


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode()


async def step(name, coro):
    try:
        report[name] = await asyncio.wait_for(coro, 15)
    except Exception as exc:  # record and go on
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(exc, (ValueError, asyncio.TimeoutError)):
            traceback.print_exc()
    return report[name]


def user_dict(user):
    return {
        "_id": user._id,
        "name": user.name,
        "username": user.username,
        "roles": [r.name for r in user.roles],
    }


async def on_message(_client, message, payload):
    return {"echo": payload, "queue": message.queuename}


async def main():
    client = Client(URL)
    if MODE == "worker":
        user = await step("signin", client.Signin(USERNAME, PASSWORD))
        if not isinstance(user, dict):
            await step("registerqueue", client.RegisterQueue("pytestq", on_message))
            report["ready"] = True
        print(json.dumps(report, default=str), flush=True)
        await asyncio.sleep(300)
        return
    if MODE == "signin":
        user = await step("signin", client.Signin(USERNAME, None if PASSWORD == "-" else PASSWORD))
        if not isinstance(user, dict):
            report["signin"] = user_dict(user)
            await step("count", client.Count({}, "pytest"))
        return
    user = await step("signin", client.Signin(USERNAME, PASSWORD))
    if isinstance(user, dict):
        return
    report["signin"] = user_dict(user)
    report["jwt"] = client.jwt
    report["getelement"] = await step("getelement", client.GetElement("hello"))
    inserted = await step("insertone", client.InsertOne({"name": "py one", "n": 1}, "pytest"))
    doc_id = inserted.get("_id") if isinstance(inserted, dict) else None
    await step(
        "insertmany",
        client.InsertMany([{"name": "py two", "n": 2}, {"name": "py three", "n": 3}], "pytest"),
    )
    await step("query", client.Query("pytest", {"n": {"$gte": 1}}, orderby={"n": 1}))
    await step("query_noorder", client.Query("pytest", {}, {"name": 1}))
    await step("count", client.Count({}, "pytest"))
    await step(
        "aggregate", client.Aggregate([{"$group": {"_id": None, "s": {"$sum": "$n"}}}], "pytest")
    )
    if doc_id:
        await step(
            "updateone", client.UpdateOne({"_id": doc_id, "name": "py one!", "n": 10}, "pytest")
        )
    opresult = await step(
        "updatedocument",
        client.UpdateDocument({"n": {"$lt": 5}}, {"$set": {"flag": True}}, "pytest"),
    )
    if not isinstance(opresult, dict):
        report["updatedocument"] = {
            "matchedCount": opresult.matchedCount,
            "modifiedCount": opresult.modifiedCount,
        }
    await step(
        "insertorupdateone", client.InsertOrUpdateOne({"name": "uniq", "n": 7}, "pytest", "name")
    )
    if doc_id:
        await step("deleteone", client.DeleteOne(doc_id, "pytest"))
    await step("deletemany", client.DeleteMany({"n": {"$lt": 5}}, "pytest"))
    await step("count_after", client.Count({}, "pytest"))
    await step("listcollections", client.ListCollections())
    report["listcollections"] = sorted(
        c.get("name") for c in report["listcollections"] if isinstance(c, dict)
    )
    await step("unknown_collection_error", client.Query("pytest", {"$where": "1"}))

    if MODE == "full":
        await other_connections(client)
    await single_connection(client)


async def other_connections(client):
    # a second connection signed in with the first one's token
    jwt_client = Client(URL)
    jwt_user = await step("signin_jwt", jwt_client.Signin(client.jwt))
    if not isinstance(jwt_user, dict):
        report["signin_jwt"] = user_dict(jwt_user)
        await step("jwt_count", jwt_client.Count({}, "pytest"))

    bad = Client(URL)
    await step("signin_bad", bad.Signin(USERNAME, "wrong password"))

    # the worker side of the queue request/reply below
    await step("registerqueue", jwt_client.RegisterQueue("pytestq", on_message))


async def single_connection(client):
    # queue request/reply to "pytestq", served by another connection (in this process for mode
    # full, by a worker process for mode single)
    await step("reply_queue", client.RegisterQueue("", lambda *a: None))
    await step("rpc", client.QueueMessage("pytestq", {"payload": {"x": 1}}, rpc=True))

    # watches
    events = []

    async def on_watch(_client, operation, document):
        events.append([operation, document.get("name")])

    watch_id = await step("watch", client.Watch("pytestw", [], on_watch))
    await step("watch_insert", client.InsertOne({"name": "watched"}, "pytestw"))
    for _ in range(100):
        if events:
            break
        await asyncio.sleep(0.05)
    report["watchevents"] = events
    if isinstance(watch_id, str):
        await step("unwatch", client.UnWatch(watch_id))

    # work items
    pushed = await step("pushworkitem", client.PushWorkitem("pytestwiq", "item one", {"a": 1}))
    if not isinstance(pushed, dict):
        report["pushworkitem"] = {
            "_id": pushed._id,
            "state": pushed.state,
            "payload": json.loads(pushed.payload or "{}"),
            "has_nextrun": pushed.HasField("nextrun"),
        }
    popped = await step("popworkitem", client.PopWorkitem("pytestwiq"))
    if popped is not None and not isinstance(popped, dict):
        report["popworkitem"] = {"_id": popped._id, "state": popped.state}
        popped.state = "successful"
        popped.payload = json.dumps({"a": 2})
        updated = await step("updateworkitem", client.UpdateWorkitem(popped))
        if updated is not None and not isinstance(updated, dict):
            report["updateworkitem"] = {
                "state": updated.state,
                "payload": json.loads(updated.payload or "{}"),
            }
    empty = await step("popworkitem_empty", client.PopWorkitem("pytestwiq"))
    if not isinstance(empty, dict):
        report["popworkitem_empty"] = None if empty is None or not empty._id else "not empty"

    if FILE_ID != "-":
        with tempfile.TemporaryDirectory() as out:
            result = await step("download", client.DownloadFile(Id=FILE_ID, OutPath=out))
            if not isinstance(result, dict):
                path = os.path.join(out, result.filename)
                report["download"] = {"filename": result.filename, "content": read_text(path)}


try:
    asyncio.run(main())
finally:
    print(json.dumps(report, default=str))
    sys.stdout.flush()
    os._exit(0)
