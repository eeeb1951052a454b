"""Hostile and broken input over the raw JSON websocket: every bad frame, field, operator and
token gets an ``error`` reply with a readable message (and the request's id as ``replyto`` when
the id could be read), the connection keeps working, and no stored document changes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import websockets
from joserfc import jwt
from joserfc.jwk import OctKey

from iapflow.testing import JsonClient, ReplyError
from iapflow.testing.server import TEST_SECRET

COLL = "entities"
MAX_FRAME = 65536
MAX_MESSAGE = 262144

MakeUser = Callable[..., Awaitable[JsonClient]]


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    """Small frame and message limits, so that oversized input is cheap to send."""
    return {"websocket": {"max_frame_bytes": MAX_FRAME, "max_message_bytes": MAX_MESSAGE}}


# -- a raw socket -------------------------------------------------------------------------------


class RawSocket:
    """A websocket speaking the JSON protocol by hand, so that any frame can be sent."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = 0

    def next_id(self) -> str:
        self._ids += 1
        return f"raw-{self._ids}"

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        """Send one frame; a dict is JSON-encoded (NaN and Infinity included)."""
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def receive(self) -> dict[str, Any]:
        """The next message from the server (pieces joined); ``data`` decoded as ``payload``."""
        async with asyncio.timeout(10):
            frame: dict[str, Any] = json.loads(await self.ws.recv())
            parts = [frame.get("data") or ""]
            while len(parts) < (frame.get("count") or 1):
                parts.append(json.loads(await self.ws.recv())["data"])
        text = "".join(parts)
        frame["payload"] = json.loads(text) if text else {}
        return frame

    async def request(self, command: str, data: Any) -> tuple[str, dict[str, Any]]:
        """Send ``command`` with ``data`` (JSON-encoded into the ``data`` string); return the id
        and the reply frame."""
        message_id = self.next_id()
        await self.send({"id": message_id, "command": command, "data": json.dumps(data)})
        return message_id, await self.receive()


def assert_error(frame: dict[str, Any], replyto: str | None) -> str:
    """``frame`` is an error reply to ``replyto`` with a readable message; return the message."""
    assert frame["command"] == "error", frame
    message = frame["payload"].get("message")
    assert isinstance(message, str) and 3 <= len(message) <= 1000, frame
    assert not message.startswith("internal error"), message
    assert frame.get("replyto") == replyto, frame
    return message


async def assert_still_works(raw: RawSocket, expected_ids: set[str]) -> None:
    """A normal query on the same connection still answers."""
    message_id, reply = await raw.request("query", {"collectionname": COLL, "query": {}})
    assert (reply["command"], reply["replyto"]) == ("query", message_id), reply
    assert {d["_id"] for d in reply["payload"]["result"]} == expected_ids


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
async def user(make_user: MakeUser) -> JsonClient:
    """A signed-in (non-admin) user; the raw socket signs in as the same user."""
    return await make_user("mallory", "pw")


@pytest.fixture
async def sentinel(user: JsonClient) -> dict[str, Any]:
    """A document the user may change and delete: nothing below may touch it."""
    reply = await user.call("insertone", collectionname=COLL, item={"name": "sentinel", "n": 1})
    return reply["result"]  # type: ignore[no-any-return]


@pytest.fixture
async def raw(server: str, user: JsonClient, sentinel: dict[str, Any]) -> AsyncIterator[RawSocket]:
    """A raw socket signed in as the user."""
    async with websockets.connect(server, max_size=2**24, compression=None) as ws:
        socket = RawSocket(ws)
        _id, reply = await socket.request("signin", {"username": "mallory", "password": "pw"})
        assert reply["command"] == "signin", reply
        yield socket


@pytest.fixture
async def unchanged(admin: JsonClient, sentinel: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    """Call it to assert that the stored documents are still just the untouched sentinel."""

    async def check() -> None:
        stored = await admin.call("query", collectionname=COLL, query={})
        assert stored["result"] == [sentinel]

    return check


async def refused_then_fine(
    raw: RawSocket,
    frame: dict[str, Any] | str | bytes,
    replyto: str | None,
    sentinel: dict[str, Any],
    unchanged: Callable[[], Awaitable[None]],
) -> str:
    """Send a bad frame, check the error reply, the connection and the store; return the message."""
    await raw.send(frame)
    message = assert_error(await raw.receive(), replyto)
    await assert_still_works(raw, {sentinel["_id"]})
    await unchanged()
    return message


# -- frames -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "replyto", "says"),
    [
        pytest.param("this is not json", None, "not JSON", id="not-json"),
        pytest.param('{"id": "x", "command": ', None, "not JSON", id="truncated-json"),
        pytest.param("", None, "not JSON", id="empty"),
        pytest.param("[1, 2, 3]", None, "object", id="array"),
        pytest.param('"just a string"', None, "object", id="string"),
        pytest.param("42", None, "object", id="number"),
        pytest.param("null", None, "object", id="null"),
        pytest.param({"id": "f1", "data": "{}"}, "f1", "command", id="missing-command"),
        pytest.param(
            {"id": "f2", "command": 5, "data": "{}"}, "f2", "command", id="command-number"
        ),
        pytest.param(
            {"id": "f3", "command": "", "data": "{}"}, "f3", "command", id="command-empty"
        ),
        pytest.param(
            {"id": "f4", "command": "query", "data": {"collectionname": COLL}},
            "f4",
            "data",
            id="data-object",
        ),
        pytest.param({"id": "f5", "command": "query", "data": 42}, "f5", "data", id="data-number"),
        pytest.param({"id": "f6", "command": "query", "data": ["x"]}, "f6", "data", id="data-list"),
        pytest.param(
            {"id": "f7", "command": "query", "data": "{not json"}, "f7", "JSON", id="data-not-json"
        ),
        pytest.param(
            {"id": "f8", "command": "query", "data": "[1, 2]"}, "f8", "object", id="data-array"
        ),
        pytest.param(
            {"id": "f9", "command": "query", "data": '"text"'}, "f9", "object", id="data-string"
        ),
        pytest.param(
            {"id": "f10", "command": "nosuchcommand", "data": "{}"},
            "f10",
            "nosuchcommand",
            id="unknown-command",
        ),
        pytest.param(
            {"id": "f11", "command": "x" * 5000, "data": "{}"},
            "f11",
            "Unknown command",
            id="unknown-long-command",
        ),
        pytest.param(
            {"id": "i" * 500, "command": "query", "data": "{}"}, None, "id", id="id-too-long"
        ),
        pytest.param(b"\x00\x01binary", None, "binary", id="binary-frame"),
    ],
)
async def test_bad_frame(
    raw: RawSocket,
    sentinel: dict[str, Any],
    unchanged: Any,
    frame: Any,
    replyto: str | None,
    says: str,
) -> None:
    message = await refused_then_fine(raw, frame, replyto, sentinel, unchanged)
    assert says.lower() in message.lower()


async def test_many_bad_frames_in_a_row_leave_the_connection_working(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    for index in range(50):
        await raw.send(f"garbage {index}")
        assert_error(await raw.receive(), None)
    await assert_still_works(raw, {sentinel["_id"]})
    await unchanged()


# -- oversized frames and pieces ----------------------------------------------------------------


async def test_oversized_frame_is_refused(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    item = {"name": "big", "blob": "x" * (MAX_FRAME + 1000)}
    frame = {
        "id": "big-1",
        "command": "insertone",
        "data": json.dumps({"collectionname": COLL, "item": item}),
    }
    message = await refused_then_fine(raw, frame, "big-1", sentinel, unchanged)
    assert "limit" in message and "pieces" in message


async def test_long_message_in_pieces_is_accepted(raw: RawSocket, sentinel: dict[str, Any]) -> None:
    """Control for the limits: the same size split into pieces below the frame limit works."""
    text = json.dumps(
        {"collectionname": COLL, "item": {"name": "big", "blob": "x" * (MAX_FRAME + 1000)}}
    )
    pieces = [text[i : i + 30000] for i in range(0, len(text), 30000)]
    for index, piece in enumerate(pieces):
        await raw.send(
            {
                "id": "long-1",
                "command": "insertone",
                "data": piece,
                "count": len(pieces),
                "index": index,
            }
        )
    reply = await raw.receive()
    assert (reply["command"], reply["replyto"]) == ("insertone", "long-1")
    assert len(reply["payload"]["result"]["blob"]) == MAX_FRAME + 1000


async def test_message_over_the_limit_in_pieces_is_refused(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    piece = "x" * 60000
    count = MAX_MESSAGE // len(piece) + 2
    reply = None
    for index in range(count):
        await raw.send(
            {"id": "huge-1", "command": "insertone", "data": piece, "count": count, "index": index}
        )
        if index * len(piece) > MAX_MESSAGE:
            reply = await raw.receive()
            break
    assert reply is not None
    assert "limit" in assert_error(reply, "huge-1")
    await assert_still_works(raw, {sentinel["_id"]})
    await unchanged()


@pytest.mark.parametrize(
    ("count", "index"),
    [
        pytest.param(2, 2, id="index-past-count"),
        pytest.param(2, -1, id="index-negative"),
        pytest.param(-3, 0, id="count-negative"),
        pytest.param("2", 0, id="count-string"),
        pytest.param(2, "0", id="index-string"),
        pytest.param(2.5, 0, id="count-float"),
        pytest.param(10**9, 0, id="count-huge"),
        pytest.param([2], 0, id="count-list"),
    ],
)
async def test_bad_piece_count_or_index(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any, count: Any, index: Any
) -> None:
    frame = {"id": "piece-1", "command": "query", "data": "{}", "count": count, "index": index}
    message = await refused_then_fine(raw, frame, "piece-1", sentinel, unchanged)
    assert "count" in message


async def test_pieces_that_disagree_on_count(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    await raw.send(
        {"id": "p-2", "command": "query", "data": '{"collectionname"', "count": 2, "index": 0}
    )
    frame = {"id": "p-2", "command": "query", "data": ': "entities"}', "count": 3, "index": 1}
    message = await refused_then_fine(raw, frame, "p-2", sentinel, unchanged)
    assert "count" in message


async def test_pieces_without_an_id(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    frame = {"command": "query", "data": "{}", "count": 2, "index": 0}
    message = await refused_then_fine(raw, frame, None, sentinel, unchanged)
    assert "id" in message


# -- deeply nested values -----------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("command", ["query", "count", "insertone", "aggregate"])
async def test_nesting_deeper_than_the_limit(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any, command: str
) -> None:
    data: dict[str, Any] = {"collectionname": COLL}
    if command == "insertone":
        data["item"] = nested(100)
    elif command == "aggregate":
        data["aggregates"] = [{"$match": nested(100)}]
    else:
        data["query"] = nested(100)
    frame = {"id": "deep-1", "command": command, "data": json.dumps(data)}
    message = await refused_then_fine(raw, frame, "deep-1", sentinel, unchanged)
    assert "nested" in message


async def test_nesting_deeper_than_the_json_parser_allows_in_data(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    data = '{"collectionname": "entities", "query": ' + "[" * 20000 + "]" * 20000 + "}"
    frame = {"id": "deep-2", "command": "query", "data": data}
    await refused_then_fine(raw, frame, "deep-2", sentinel, unchanged)


async def test_nesting_deeper_than_the_json_parser_allows_in_the_frame(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    frame = (
        '{"id": "deep-3", "command": "query", "data": "{}", "x": ' + "[" * 20000 + "]" * 20000 + "}"
    )
    await refused_then_fine(raw, frame, None, sentinel, unchanged)


# -- document commands: missing and wrong-typed fields --------------------------------------------

INF = float("inf")
NAN = float("nan")


def acl_with(rights: Any) -> dict[str, Any]:
    return {
        "name": "acl",
        "_acl": [{"_id": "5a17f157c4815318c8536c21", "name": "users", "rights": rights}],
    }


MISSING: Any = object()


def bad(case_id: str, command: str, says: str, **data: Any) -> Any:
    """One bad request: ``command`` with ``data`` on entities (``collectionname=MISSING`` drops
    it); the error message must contain ``says`` (case-insensitive)."""
    fields = {"collectionname": COLL, **data}
    fields = {key: value for key, value in fields.items() if value is not MISSING}
    return pytest.param(command, fields, says, id=case_id)


# A $graphLookup missing connectFromField, connectToField, startWith and as.
HALF_GRAPH = {"$graphLookup": {"from": COLL}}
USERS_ROLE = "5a17f157c4815318c8536c21"
HUGE_ACL = [{"_id": f"id{i}", "rights": 2} for i in range(200)]

# fmt: off
BAD_COMMANDS = [
    # collectionname
    bad("query-no-collection", "query", "collectionname", collectionname=MISSING, query={}),
    bad("query-collection-number", "query", "collectionname must be a string", collectionname=5),
    bad("query-collection-list", "query", "must be a string", collectionname=["entities"]),
    bad("query-collection-dollar", "query", "collection name", collectionname="$bad"),
    bad("query-collection-inner-dollar", "query", "collection name", collectionname="a$b"),
    bad("query-collection-system", "query", "collection name", collectionname="system.users"),
    bad("query-collection-nul", "query", "collection name", collectionname="a\x00b"),
    bad("query-collection-long", "query", "collection name", collectionname="x" * 500),
    bad("insertone-no-collection", "insertone", "collectionname", collectionname=MISSING,
        item={"a": 1}),
    bad("deletemany-collection-object", "deletemany", "must be a string",
        collectionname={"$ne": 1}, ids=["x"]),
    # query
    bad("query-list", "query", "query", query=[1, 2]),
    bad("query-number", "query", "query", query=5),
    bad("query-bad-json-string", "query", "query", query="{nope"),
    bad("query-json-array-string", "query", "query", query="[1]"),
    bad("count-query-list", "count", "query", query=[1]),
    bad("distinct-query-string", "distinct", "query", query="x", field="name"),
    # top, skip, orderby, projection, queryas
    bad("top-negative", "query", "top", query={}, top=-1),
    bad("top-string", "query", "top", query={}, top="many"),
    bad("top-object", "query", "top", query={}, top={"$gt": 1}),
    bad("top-huge", "query", "top", query={}, top=10**12),
    bad("top-infinity", "query", "top", query={}, top=INF),
    bad("top-nan", "query", "top", query={}, top=NAN),
    bad("skip-negative", "query", "skip", query={}, skip=-5),
    bad("skip-infinity", "query", "skip", query={}, skip=INF),
    bad("orderby-number", "query", "orderby", query={}, orderby=5),
    bad("orderby-list", "query", "orderby", query={}, orderby=["name"]),
    bad("orderby-direction", "query", "orderby", query={}, orderby={"name": "sideways"}),
    bad("orderby-bad-json", "query", "orderby", query={}, orderby="{broken"),
    bad("orderby-operator", "query", "orderby", query={}, orderby={"$natural": 1}),
    bad("projection-string", "query", "projection", query={}, projection="x"),
    bad("projection-list", "query", "projection", query={}, projection=[1]),
    bad("projection-deep", "query", "nested", query={}, projection=nested(100)),
    bad("projection-very-deep", "query", "nested", query={}, projection=nested(900)),
    bad("queryas-object", "query", "queryas", query={}, queryas={"$ne": ""}),
    bad("queryas-unknown", "query", "queryas", query={}, queryas="nobody"),
    # operators the store rejects, bad regular expressions
    bad("unknown-operator", "query", "$nosuchop", query={"a": {"$nosuchop": 1}}),
    bad("unknown-top-operator", "query", "$nosuchop", query={"$nosuchop": 1}),
    bad("count-unknown-operator", "count", "$nosuchop", query={"a": {"$nosuchop": 1}}),
    bad("and-not-a-list", "query", "$and", query={"$and": 5}),
    bad("in-not-a-list", "query", "$in", query={"a": {"$in": 5}}),
    bad("bits-string", "query", "", query={"a": {"$bitsAllSet": "x"}}),
    bad("regexp-bad-pattern", "query", "regular expression", query={"name": "__REGEXP /(/"}),
    bad("regexp-bad-flag", "query", "flag", query={"name": "__REGEXP /a/q"}),
    # distinct
    bad("distinct-no-field", "distinct", "field", query={}),
    bad("distinct-field-number", "distinct", "field", query={}, field=5),
    bad("distinct-field-operator", "distinct", "field", query={}, field="$name"),
    # aggregate
    bad("aggregates-missing", "aggregate", "aggregates"),
    bad("aggregates-number", "aggregate", "aggregates", aggregates=5),
    bad("aggregates-empty", "aggregate", "aggregates", aggregates=[]),
    bad("aggregates-bad-json", "aggregate", "aggregates", aggregates="[{broken"),
    bad("stage-two-keys", "aggregate", "stage", aggregates=[{"$match": {}, "$limit": 1}]),
    bad("stage-number", "aggregate", "stage", aggregates=[5]),
    bad("stage-empty", "aggregate", "stage", aggregates=[{}]),
    bad("stage-no-dollar", "aggregate", "stage", aggregates=[{"match": {}}]),
    bad("stage-unknown", "aggregate", "$nosuchstage", aggregates=[{"$nosuchstage": {}}]),
    bad("stage-bad-limit", "aggregate", "$limit", aggregates=[{"$limit": -1}]),
    bad("lookup-string", "aggregate", "$lookup", aggregates=[{"$lookup": "x"}]),
    bad("lookup-from-number", "aggregate", "from",
        aggregates=[{"$lookup": {"from": 5, "as": "x"}}]),
    bad("lookup-from-bad-name", "aggregate", "collection name",
        aggregates=[{"$lookup": {"from": "$bad", "pipeline": [], "as": "x"}}]),
    bad("lookup-pipeline-number", "aggregate", "pipeline",
        aggregates=[{"$lookup": {"from": COLL, "pipeline": 5, "as": "x"}}]),
    bad("facet-number", "aggregate", "$facet", aggregates=[{"$facet": 5}]),
    bad("unionwith-number", "aggregate", "$unionWith", aggregates=[{"$unionWith": 5}]),
    bad("graphlookup-incomplete", "aggregate", "", aggregates=[HALF_GRAPH]),
    # insert
    bad("item-missing", "insertone", "item"),
    bad("item-list", "insertone", "item", item=[1]),
    bad("item-number", "insertone", "item", item=5),
    bad("item-bad-json", "insertone", "item", item="{broken"),
    bad("item-operator-key", "insertone", "field name", item={"$set": {"a": 1}}),
    bad("item-nested-operator-key", "insertone", "field name", item={"a": {"$gt": 1}}),
    bad("item-nul-key", "insertone", "field name", item={"a\x00b": 1}),
    bad("id-number", "insertone", "_id", item={"_id": 5}),
    bad("id-empty", "insertone", "_id", item={"_id": ""}),
    bad("id-operator", "insertone", "$gt", item={"_id": {"$gt": ""}}),
    bad("id-list", "insertone", "_id", item={"_id": ["a"]}),
    bad("id-long", "insertone", "_id", item={"_id": "x" * 1000}),
    bad("items-missing", "insertmany", "items"),
    bad("items-object", "insertmany", "items", items={"a": 1}),
    bad("items-empty", "insertmany", "items", items=[]),
    bad("items-number-inside", "insertmany", "items", items=[{"a": 1}, 5]),
    bad("items-duplicate-ids", "insertmany", "duplicate", items=[{"_id": "dup"}, {"_id": "dup"}]),
    # _acl
    bad("rights-too-big", "insertone", "rights", item=acl_with(70000)),
    bad("rights-negative", "insertone", "rights", item=acl_with(-5)),
    bad("rights-huge", "insertone", "rights", item=acl_with(2**70)),
    bad("rights-infinity", "insertone", "rights", item=acl_with(INF)),
    bad("rights-nan", "insertone", "rights", item=acl_with(NAN)),
    bad("rights-fraction", "insertone", "rights", item=acl_with(2.5)),
    bad("rights-bool", "insertone", "rights", item=acl_with(True)),
    bad("rights-garbage-string", "insertone", "rights", item=acl_with("!!not base64!!")),
    bad("rights-object", "insertone", "$gt", item=acl_with({"$gt": 1})),
    bad("acl-string", "insertone", "_acl", item={"_acl": "everyone"}),
    bad("ace-no-id", "insertone", "_id", item={"_acl": [{"rights": 2}]}),
    bad("ace-number", "insertone", "_acl", item={"_acl": [5]}),
    bad("acl-too-long", "insertone", "_acl", item={"_acl": HUGE_ACL}),
    # updates
    bad("update-item-missing", "updateone", "item"),
    bad("update-item-list", "updateone", "item", item=[1]),
    bad("update-item-no-id", "updateone", "_id", item={"name": "no id"}),
    bad("update-id-number", "updateone", "_id", item={"_id": 5}),
    bad("update-id-operator", "updateone", "", item={"_id": {"$ne": None}, "name": "all"}),
    bad("update-query-without-operators", "updateone", "operators", query={}, item={"name": "x"}),
    bad("update-set-number", "updateone", "$set", query={}, item={"$set": 5}),
    bad("update-pipeline", "updateone", "item", query={}, item=[{"$set": {"a": 1}}]),
    bad("update-unknown-operator", "updateone", "$nosuchop", query={},
        item={"$nosuchop": {"a": 1}}),
    bad("update-query-list", "updateone", "query", query=[1], item={"$set": {"a": 1}}),
    bad("updatemany-item-missing", "updatemany", "item", query={}),
    bad("updatemany-query-string", "updatemany", "query", query="x", item={"$set": {"a": 1}}),
    bad("updatemany-inc-string", "updatemany", "", query={}, item={"$inc": {"n": "one"}}),
    bad("updatemany-set-acl", "updatemany", "_acl", query={}, item={"$set": {"_acl": []}}),
    bad("updatemany-rename-number", "updatemany", "$rename", query={},
        item={"$rename": {"n": 5}}),
    bad("upsert-item-missing", "insertorupdateone", "item"),
    bad("upsert-uniqeness-number", "insertorupdateone", "uniqeness", item={"a": 1}, uniqeness=5),
    bad("upsert-uniqeness-operator", "insertorupdateone", "uniqeness", item={"a": 1},
        uniqeness="$a"),
    bad("upsert-uniqeness-missing-field", "insertorupdateone", "uniqeness", item={"a": 1},
        uniqeness="b"),
    bad("upsertmany-items", "insertorupdatemany", "items", items="x"),
    # deletes
    bad("delete-id-missing", "deleteone", "id"),
    bad("delete-id-number", "deleteone", "id", id=5),
    bad("delete-id-operator", "deleteone", "id", id={"$ne": None}),
    bad("delete-id-list", "deleteone", "id", id=["x"]),
    bad("deletemany-nothing", "deletemany", "query"),
    bad("deletemany-ids-string", "deletemany", "ids", ids="x"),
    bad("deletemany-ids-number", "deletemany", "ids", ids=[5]),
    bad("deletemany-ids-operator", "deletemany", "ids", ids=[{"$ne": 1}]),
    bad("deletemany-query-number", "deletemany", "query", query=5),
    # collections
    bad("createcollection-not-admin", "createcollection", "admins", collectionname="mine"),
    bad("dropcollection-not-admin", "dropcollection", "admins"),
    # signin with wrong types
    bad("signin-username-number", "signin", "string", username=5, password="pw"),
    bad("signin-password-object", "signin", "string", username="mallory", password={"$ne": ""}),
    bad("signin-username-object", "signin", "string", username={"$gt": ""}, password="pw"),
    bad("signin-jwt-number", "signin", "jwt", jwt=5),
    bad("signin-empty", "signin", "signin"),
]
# fmt: on


@pytest.mark.parametrize(("command", "data", "says"), BAD_COMMANDS)
async def test_bad_command_input(
    raw: RawSocket,
    sentinel: dict[str, Any],
    unchanged: Any,
    command: str,
    data: dict[str, Any],
    says: str,
) -> None:
    message_id = raw.next_id()
    frame = {"id": message_id, "command": command, "data": json.dumps(data)}
    message = await refused_then_fine(raw, frame, message_id, sentinel, unchanged)
    assert says.lower() in message.lower()


async def test_operator_update_with_bad_input_on_own_document(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    """A document the user may change, addressed exactly, with input the store refuses."""
    for item in (
        {"$inc": {"name": 1}},
        {"$push": {"n": 1}},
        {"$set": {"a": 1}, "$unset": {"a": ""}},
    ):
        message_id = raw.next_id()
        data = {"collectionname": COLL, "query": {"_id": sentinel["_id"]}, "item": item}
        frame = {"id": message_id, "command": "updateone", "data": json.dumps(data)}
        await refused_then_fine(raw, frame, message_id, sentinel, unchanged)


async def test_replace_with_bad_acl_on_own_document(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    for rights in (70000, -7, INF, NAN, "!!"):
        item = {
            **sentinel,
            "_acl": [*sentinel["_acl"], {"_id": "5a17f157c4815318c8536c21", "rights": rights}],
        }
        message_id = raw.next_id()
        frame = {
            "id": message_id,
            "command": "updateone",
            "data": json.dumps({"collectionname": COLL, "item": item}),
        }
        message = await refused_then_fine(raw, frame, message_id, sentinel, unchanged)
        assert "rights" in message


async def test_not_signed_in(server: str, sentinel: dict[str, Any], unchanged: Any) -> None:
    async with websockets.connect(server, compression=None) as ws:
        socket = RawSocket(ws)
        message_id, reply = await socket.request("query", {"collectionname": COLL, "query": {}})
        assert "signed in" in assert_error(reply, message_id)
        message_id, reply = await socket.request(
            "signin", {"username": "mallory", "password": "wrong"}
        )
        assert_error(reply, message_id)
        message_id, reply = await socket.request(
            "signin", {"username": "mallory", "password": "pw"}
        )
        assert reply["command"] == "signin"
        await assert_still_works(socket, {sentinel["_id"]})
    await unchanged()


# -- tokens -------------------------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def claims_for(user_id: str, expires_in: int = 300, **extra: Any) -> dict[str, Any]:
    """Claims shaped like the server's own tokens."""
    now = int(time.time())
    return {
        "data": {"_id": user_id, "impostor": ""},
        "sub": user_id,
        "iss": "iapflow",
        "iat": now,
        "exp": now + expires_in,
        **extra,
    }


def make_token(claims: dict[str, Any], secret: str = TEST_SECRET) -> str:
    """An HS256 token signed with ``secret``."""
    return jwt.encode(
        {"alg": "HS256", "typ": "JWT"},
        claims,
        OctKey.import_key(secret.encode()),
        algorithms=["HS256"],
    )


def unsigned_token(claims: dict[str, Any]) -> str:
    """A token with ``alg: none`` and no signature."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def with_signature_changed(token: str) -> str:
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def with_payload_of(token: str, claims: dict[str, Any]) -> str:
    head, _payload, signature = token.split(".")
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"


BAD_TOKENS: list[Any] = [
    pytest.param(
        lambda me, other: with_signature_changed(make_token(claims_for(me))),
        id="tampered-signature",
    ),
    pytest.param(
        lambda me, other: with_payload_of(make_token(claims_for(me)), claims_for(other)),
        id="tampered-payload",
    ),
    pytest.param(lambda me, other: make_token(claims_for(me, expires_in=-60)), id="expired"),
    pytest.param(lambda me, other: unsigned_token(claims_for(other)), id="alg-none"),
    pytest.param(
        lambda me, other: make_token(claims_for(other), secret="another-secret-" + "x" * 40),
        id="other-secret",
    ),
    pytest.param(
        lambda me, other: make_token({**claims_for(other), "iss": "someone-else"}),
        id="wrong-issuer",
    ),
    pytest.param(
        lambda me, other: make_token(
            {"sub": other, "exp": int(time.time()) + 60, "iss": "iapflow"}
        ),
        id="no-user-claim",
    ),
    pytest.param(
        lambda me, other: make_token(claims_for("000000000000000000000000")), id="unknown-user"
    ),
    pytest.param(lambda me, other: "garbage", id="garbage"),
    pytest.param(lambda me, other: "a.b.c", id="three-garbage-parts"),
    pytest.param(lambda me, other: "Bearer " + "x" * 100, id="bearer-garbage"),
    pytest.param(lambda me, other: "x" * 10000, id="very-long"),
]


@pytest.fixture
async def signed_in(connect: Callable[..., Awaitable[JsonClient]], user: JsonClient) -> JsonClient:
    """Another connection signed in as the user."""
    client = await connect()
    await client.signin("mallory", "pw")
    return client


async def test_a_token_made_with_the_test_secret_is_accepted(
    connect: Callable[..., Awaitable[JsonClient]], user: JsonClient, sentinel: dict[str, Any]
) -> None:
    """Control for the token tests: the way they make tokens produces valid ones."""
    token = make_token(claims_for(user.user["_id"]))
    client = await connect()
    reply = await client.signin(jwt=token)
    assert reply["user"]["_id"] == user.user["_id"]
    other = await connect()
    result = await other.call("query", collectionname=COLL, query={}, jwt=token)
    assert [d["_id"] for d in result["result"]] == [sentinel["_id"]]


@pytest.mark.parametrize("make", BAD_TOKENS)
async def test_bad_token_in_signin(
    connect: Callable[..., Awaitable[JsonClient]],
    user: JsonClient,
    admin: JsonClient,
    sentinel: dict[str, Any],
    make: Callable[[str, str], str],
) -> None:
    token = make(user.user["_id"], admin.user["_id"])
    client = await connect()
    with pytest.raises(ReplyError) as caught:
        await client.signin(jwt=token)
    assert "token" in str(caught.value).lower()
    with pytest.raises(ReplyError, match="signed in"):
        await client.call("query", collectionname=COLL, query={})
    await client.signin("mallory", "pw")
    found = await client.call("query", collectionname=COLL, query={})
    assert [d["_id"] for d in found["result"]] == [sentinel["_id"]]


@pytest.mark.parametrize("make", BAD_TOKENS)
async def test_bad_token_as_a_per_message_override(
    signed_in: JsonClient,
    user: JsonClient,
    admin: JsonClient,
    sentinel: dict[str, Any],
    unchanged: Any,
    make: Callable[[str, str], str],
) -> None:
    token = make(user.user["_id"], admin.user["_id"])
    with pytest.raises(ReplyError) as caught:
        await signed_in.call("query", collectionname=COLL, query={}, jwt=token)
    assert "token" in str(caught.value).lower()
    with pytest.raises(ReplyError):
        await signed_in.call("deletemany", collectionname=COLL, ids=[sentinel["_id"]], jwt=token)
    found = await signed_in.call("query", collectionname=COLL, query={})
    assert [d["_id"] for d in found["result"]] == [sentinel["_id"]]
    await unchanged()


async def test_bad_token_replies_carry_the_request_id(
    raw: RawSocket, sentinel: dict[str, Any], unchanged: Any
) -> None:
    for token in ("garbage", unsigned_token(claims_for("x"))):
        for command in ("signin", "query"):
            message_id = raw.next_id()
            data = {"jwt": token, "collectionname": COLL, "query": {}}
            frame = {"id": message_id, "command": command, "data": json.dumps(data)}
            await refused_then_fine(raw, frame, message_id, sentinel, unchanged)
