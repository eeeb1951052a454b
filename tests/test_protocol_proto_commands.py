"""Every dispatcher command that the public ``openiap/proto`` schema has a message for, over
``/ws/v2`` with a small client built on iapflow's own generated ``openiap_pb2`` (the official
clients have no method for most of these; ``test_protocol_proto.py`` runs those clients), and
malformed input on gRPC ``SetupStream``: bytes that are not an Envelope, an unknown command, the
wrong payload type, a message over the limit, and (from a raw HTTP/2 client) a gRPC length
prefix that promises more than arrives or sets the compressed flag. The same cases on ``/ws/v2``
are in ``test_protocol_proto.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message

from iapflow.builtin.proto import codec as protocodec
from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.plugins import Plugins
from iapflow.testing import make_test_config, running_server
from iapflow.testing.proto_client import ProtoError, ProtoWs

M = TypeVar("M", bound=Message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def servers(tmp_path: Path, mongo_storage: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A server with gRPC on (a small message limit) and the stub agent runtime."""
    grpc_port = _free_port()
    config = make_test_config(
        tmp_path,
        mongo_storage,
        grpc={"port": grpc_port, "max_message_bytes": 64 * 1024},
        agents={"runtime": "stub"},
    )
    async with running_server(config) as base:
        yield {"ws": base + "/ws/v2", "grpc": f"127.0.0.1:{grpc_port}"}


@pytest.fixture
async def admin(servers: dict[str, Any]) -> AsyncIterator[ProtoWs]:
    async with ProtoWs(servers["ws"]) as client:
        await client.signin()
        yield client


def test_every_mapping_names_real_messages_and_reaches_its_handler() -> None:
    commands = Plugins().commands()
    table = protocodec.ProtoTable.build(spec for _name, spec in commands.items())
    assert {"query", "signin", "pushworkitem", "updatedocument", "unregisterqueue"} <= set(
        table.commands
    )
    for name, mapped in table.commands.items():
        spec = commands.get(mapped.internal)
        assert spec is not None and spec.proto is not None, name
        assert mapped.request.DESCRIPTOR.full_name.endswith("Request"), name
    assert {"queuemessage", "watchevent", "refreshtoken"} <= set(table.pushes)


async def test_document_commands(admin: ProtoWs) -> None:
    items = [{"name": "a", "color": "red", "n": 1}, {"name": "b", "color": "blue", "n": 2},
             {"name": "c", "color": "red", "n": 2}]  # fmt: skip
    inserted = await admin.call(
        "insertmany",
        pb.InsertManyRequest(collectionname="pcmd", items=json.dumps(items)),
        pb.InsertManyResponse,
    )
    docs = json.loads(inserted.results)
    assert [d["name"] for d in docs] == ["a", "b", "c"] and all(d["_id"] for d in docs)

    count = await admin.call(
        "count", pb.CountRequest(collectionname="pcmd", query='{"color": "red"}'), pb.CountResponse
    )
    assert count.result == 2

    colors = await admin.call(
        "distinct", pb.DistinctRequest(collectionname="pcmd", field="color"), pb.DistinctResponse
    )
    assert sorted(colors.results) == ["blue", "red"]
    numbers = await admin.call(
        "distinct",
        pb.DistinctRequest(collectionname="pcmd", field="n", query='{"color": "red"}'),
        pb.DistinctResponse,
    )
    assert sorted(numbers.results) == ["1", "2"]  # non-text values travel as JSON text
    with pytest.raises(ProtoError, match="field"):
        await admin.call("distinct", pb.DistinctRequest(collectionname="pcmd"), pb.DistinctResponse)

    upserted = await admin.call(
        "insertorupdatemany",
        pb.InsertOrUpdateManyRequest(
            collectionname="pcmd", uniqeness="name",
            items=json.dumps([{"name": "a", "color": "green"}, {"name": "d", "color": "green"}]),
        ),
        pb.InsertOrUpdateManyResponse,
    )  # fmt: skip
    assert [(d["name"], d["color"]) for d in json.loads(upserted.results)] == [
        ("a", "green"),
        ("d", "green"),
    ]
    assert json.loads(upserted.results)[0]["_id"] == docs[0]["_id"]

    version = await admin.call(
        "getdocumentversion",
        pb.GetDocumentVersionRequest(collectionname="pcmd", id=docs[0]["_id"], version=0),
        pb.GetDocumentVersionResponse,
    )
    assert json.loads(version.result)["color"] == "red"

    by_query = await admin.call(
        "deletemany",
        pb.DeleteManyRequest(collectionname="pcmd", query='{"color": "green"}'),
        pb.DeleteManyResponse,
    )
    assert by_query.affectedrows == 2
    by_ids = await admin.call(
        "deletemany",
        pb.DeleteManyRequest(collectionname="pcmd", ids=[docs[1]["_id"], docs[2]["_id"]]),
        pb.DeleteManyResponse,
    )
    assert by_ids.affectedrows == 2
    left = await admin.call("count", pb.CountRequest(collectionname="pcmd"), pb.CountResponse)
    assert left.result == 0


async def test_collection_and_index_commands(admin: ProtoWs) -> None:
    await admin.call(
        "createcollection",
        pb.CreateCollectionRequest(collectionname="pcoll"),
        pb.CreateCollectionResponse,
    )
    listed = await admin.call(
        "listcollections", pb.ListCollectionsRequest(), pb.ListCollectionsResponse
    )
    assert "pcoll" in {c["name"] for c in json.loads(listed.results)}

    created = await admin.call(
        "createindex",
        pb.CreateIndexRequest(
            collectionname="pcoll", index='{"n": 1}', options='{"unique": true}', name="n_unique"
        ),
        pb.CreateIndexResponse,
    )
    assert created.result == "n_unique"
    indexes = await admin.call(
        "getindexes", pb.GetIndexesRequest(collectionname="pcoll"), pb.GetIndexesResponse
    )
    assert "n_unique" in {i["name"] for i in json.loads(indexes.results)}
    await admin.call(
        "insertone", pb.InsertOneRequest(collectionname="pcoll", item='{"n": 1}'),
        pb.InsertOneResponse,
    )  # fmt: skip
    with pytest.raises(ProtoError, match=r"(?i)duplicate"):
        await admin.call(
            "insertone", pb.InsertOneRequest(collectionname="pcoll", item='{"n": 1}'),
            pb.InsertOneResponse,
        )  # fmt: skip
    with pytest.raises(ProtoError, match="direction"):
        await admin.call(
            "createindex", pb.CreateIndexRequest(collectionname="pcoll", index='{"n": 5}'),
            pb.CreateIndexResponse,
        )  # fmt: skip
    await admin.call(
        "dropindex", pb.DropIndexRequest(collectionname="pcoll", name="n_unique"),
        pb.DropIndexResponse,
    )  # fmt: skip
    indexes = await admin.call(
        "getindexes", pb.GetIndexesRequest(collectionname="pcoll"), pb.GetIndexesResponse
    )
    assert "n_unique" not in {i["name"] for i in json.loads(indexes.results)}

    await admin.call(
        "dropcollection", pb.DropCollectionRequest(collectionname="pcoll"),
        pb.DropCollectionResponse,
    )  # fmt: skip
    listed = await admin.call(
        "listcollections", pb.ListCollectionsRequest(), pb.ListCollectionsResponse
    )
    assert "pcoll" not in {c["name"] for c in json.loads(listed.results)}


async def test_work_item_queue_commands(admin: ProtoWs) -> None:
    added = await admin.call(
        "addworkitemqueue",
        pb.AddWorkItemQueueRequest(workitemqueue=pb.WorkItemQueue(name="pwiq", maxretries=2)),
        pb.AddWorkItemQueueResponse,
    )
    queue = added.workitemqueue
    assert queue._id and queue.name == "pwiq" and queue.maxretries == 2
    assert queue.usersrole and queue.usersrole in {ace._id for ace in queue._acl}
    assert queue.HasField("_created")
    with pytest.raises(ProtoError, match="already exists"):
        await admin.call(
            "addworkitemqueue",
            pb.AddWorkItemQueueRequest(workitemqueue=pb.WorkItemQueue(name="pwiq")),
            pb.AddWorkItemQueueResponse,
        )

    updated = await admin.call(
        "updateworkitemqueue",
        pb.UpdateWorkItemQueueRequest(
            workitemqueue=pb.WorkItemQueue(_id=queue._id, maxretries=5, robotqueue="robots")
        ),
        pb.UpdateWorkItemQueueResponse,
    )
    assert updated.workitemqueue.maxretries == 5
    assert updated.workitemqueue.robotqueue == "robots"
    assert updated.workitemqueue.name == "pwiq"

    pushed = await admin.call(
        "pushworkitems",
        pb.PushWorkitemsRequest(
            wiq="pwiq",
            items=[pb.Workitem(name="one", payload='{"a": 1}'), pb.Workitem(name="two")],
        ),
        pb.PushWorkitemsResponse,
    )
    assert [w.name for w in pushed.workitems] == ["one", "two"]
    assert json.loads(pushed.workitems[0].payload) == {"a": 1}
    assert all(w.wiqid == queue._id and w.state == "new" for w in pushed.workitems)
    await admin.call(
        "deleteworkitem", pb.DeleteWorkitemRequest(_id=pushed.workitems[0]._id),
        pb.DeleteWorkitemResponse,
    )  # fmt: skip

    with pytest.raises(ProtoError, match="still holds 1"):
        await admin.call(
            "deleteworkitemqueue", pb.DeleteWorkItemQueueRequest(wiq="pwiq"),
            pb.DeleteWorkItemQueueResponse,
        )  # fmt: skip
    await admin.call(
        "deleteworkitemqueue", pb.DeleteWorkItemQueueRequest(wiqid=queue._id, purge=True),
        pb.DeleteWorkItemQueueResponse,
    )  # fmt: skip
    with pytest.raises(ProtoError, match="not found"):
        await admin.call(
            "pushworkitem", pb.PushWorkitemRequest(wiq="pwiq", name="late"),
            pb.PushWorkitemResponse,
        )  # fmt: skip


async def test_customcommand_exchange_and_unregisterqueue(
    admin: ProtoWs, servers: dict[str, Any]
) -> None:
    clients = await admin.call(
        "customcommand", pb.CustomCommandRequest(command="getclients"), pb.CustomCommandResponse
    )
    described = json.loads(clients.result)
    assert any(
        c["protocol"] == "proto-ws" and (c["user"] or {}).get("username") == "admin"
        for c in described
    )
    with pytest.raises(ProtoError, match="known: "):
        await admin.call(
            "customcommand", pb.CustomCommandRequest(command="nosuch"), pb.CustomCommandResponse
        )

    exchange = await admin.call(
        "registerexchange",
        pb.RegisterExchangeRequest(exchangename="pexchange", algorithm="fanout", addqueue=True),
        pb.RegisterExchangeResponse,
    )
    assert exchange.queuename
    async with ProtoWs(servers["ws"]) as sender:
        await sender.signin()
        await sender.call(
            "queuemessage",
            pb.QueueMessageRequest(exchangename="pexchange", data='{"hello": 1}', striptoken=True),
            pb.QueueMessageResponse,
        )
    while not admin.pushes:
        admin.pushes.append(await admin.next())
    push = admin.pushes.pop(0)
    assert push.command == "queueevent" and push.rid == ""
    event = pb.QueueEvent()
    push.data.Unpack(event)
    assert event.exchangename == "pexchange" and event.queuename == exchange.queuename
    assert json.loads(event.data) == {"hello": 1}

    await admin.call(
        "unregisterqueue", pb.UnRegisterQueueRequest(queuename=exchange.queuename),
        pb.UnRegisterQueueResponse,
    )  # fmt: skip
    with pytest.raises(ProtoError):
        await admin.call(
            "unregisterqueue", pb.UnRegisterQueueRequest(queuename=exchange.queuename),
            pb.UnRegisterQueueResponse,
        )  # fmt: skip


async def test_agent_commands_on_the_stub_runtime(admin: ProtoWs) -> None:
    item = {"_type": "agent", "name": "protobot", "slug": "protobot", "image": "openiap/nodered"}
    inserted = await admin.call(
        "insertone",
        pb.InsertOneRequest(collectionname="agents", item=json.dumps(item)),
        pb.InsertOneResponse,
    )
    agent_id = json.loads(inserted.result)["_id"]
    await admin.call("startagent", pb.StartAgentRequest(agentid=agent_id), pb.StartAgentResponse)
    pods = await admin.call(
        "getagentpods", pb.GetAgentPodsRequest(agentid=agent_id), pb.GetAgentPodsResponse
    )
    assert [(p["name"], p["state"]) for p in json.loads(pods.results)] == [("protobot", "running")]
    log = await admin.call(
        "getagentlog", pb.GetAgentLogRequest(agentid=agent_id), pb.GetAgentLogResponse
    )
    assert "Started flows" in log.result
    await admin.call("stopagent", pb.StopAgentRequest(agentid=agent_id), pb.StopAgentResponse)
    pods = await admin.call(
        "getagentpods", pb.GetAgentPodsRequest(agentid=agent_id), pb.GetAgentPodsResponse
    )
    assert [p["state"] for p in json.loads(pods.results)] == ["stopped"]
    await admin.call(
        "deleteagentpod", pb.DeleteAgentPodRequest(agentid=agent_id), pb.DeleteAgentPodResponse
    )
    await admin.call("deleteagent", pb.DeleteAgentRequest(agentid=agent_id), pb.DeleteAgentResponse)
    found = await admin.call(
        "query",
        pb.QueryRequest(collectionname="agents", query=json.dumps({"_id": agent_id})),
        pb.QueryResponse,
    )
    assert json.loads(found.results) == []
    with pytest.raises(ProtoError, match="agentid is required"):
        await admin.call("startagent", pb.StartAgentRequest(), pb.StartAgentResponse)


async def test_json_only_commands_get_a_clear_error(admin: ProtoWs) -> None:
    with pytest.raises(ProtoError, match="Unknown command 'getworkitemqueue'"):
        await admin.call("getworkitemqueue", pb.PingRequest(), pb.PingResponse)


# -- malformed input on gRPC --------------------------------------------------------------------


class RawGrpc:
    """A SetupStream call that sends raw bytes and reads Envelopes."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        method = self.channel.stream_stream(
            "/openiap.FlowService/SetupStream",
            request_serializer=None,
            response_deserializer=pb.Envelope.FromString,
        )
        self.call: Any = method()

    async def send(self, envelope: pb.Envelope | bytes) -> None:
        raw = envelope if isinstance(envelope, bytes) else envelope.SerializeToString()
        await self.call.write(raw)

    async def read(self) -> pb.Envelope:
        envelope = await asyncio.wait_for(self.call.read(), 15)
        assert isinstance(envelope, pb.Envelope), envelope
        return envelope

    async def request(self, command: str, msg: Message | None, request_id: str) -> pb.Envelope:
        envelope = pb.Envelope(command=command, id=request_id)
        if msg is not None:
            envelope.data.Pack(msg)
        await self.send(envelope)
        while True:
            reply = await self.read()
            if reply.rid == request_id:
                return reply

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def _error_text(envelope: pb.Envelope) -> str:
    error = pb.ErrorResponse()
    envelope.data.Unpack(error)
    return error.message


async def test_malformed_grpc_messages_get_errors_and_other_streams_keep_working(
    servers: dict[str, Any],
) -> None:
    bystander, client = RawGrpc(servers["grpc"]), RawGrpc(servers["grpc"])
    try:
        assert (await client.read()).command == "ping"
        assert (await bystander.read()).command == "ping"
        signin = await bystander.request(
            "signin", pb.SigninRequest(username="admin", password="admin"), "s1"
        )
        assert signin.command == "signinreply"

        # bytes that are not an Envelope: an error envelope, the stream stays open
        await client.send(b"\xff\xff\xff\xff\xff")
        reply = await client.read()
        assert reply.command == "error" and "Envelope" in _error_text(reply)

        reply = await client.request("nosuchcommand", None, "u1")
        assert reply.command == "error" and "Unknown command" in _error_text(reply)

        wrong = pb.Envelope(command="signin", id="w1")
        wrong.data.Pack(pb.Stream(data=b"\x12\x34\xff\xff"))
        await client.send(wrong)
        reply = await client.read()
        assert reply.command == "error" and reply.rid == "w1"

        reply = await client.request("ping", None, "p1")
        assert reply.command == "pong"

        # a message over [grpc] max_message_bytes (gRPC's own length prefix): the call ends
        huge = pb.Envelope(command="insertone", id="big")
        huge.data.Pack(pb.InsertOneRequest(collectionname="x", item="x" * 100_000))
        await client.send(huge)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            while True:
                await client.read()
        assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        # the other stream never noticed
        query = pb.QueryRequest(collectionname="users", query='{"username": "admin"}')
        reply = await bystander.request("query", query, "q1")
        assert reply.command == "queryreply"
        results = pb.QueryResponse()
        reply.data.Unpack(results)
        assert json.loads(results.results)[0]["username"] == "admin"
    finally:
        await client.close()
        await bystander.close()


# -- a gRPC length prefix that lies, from a raw HTTP/2 client -------------------------------------


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _hpack_literal(name: str, value: str) -> bytes:
    # "literal header field without indexing, new name", no Huffman; short strings only
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + bytes([len(raw_name)]) + raw_name + bytes([len(raw_value)]) + raw_value


async def _h2_stream_outcome(host: str, port: int, body: bytes) -> dict[str, Any]:
    """Open SetupStream on a raw HTTP/2 connection, send ``body`` as its whole request, and
    report how stream 1 ended (``trailers``, ``reset``, ``goaway`` or ``closed``), its
    ``grpc-status`` when the trailers carry it as a plain literal (grpc-core does), and the
    commands of the envelopes the server sent."""
    reader, writer = await asyncio.open_connection(host, port)
    headers = b"".join(
        _hpack_literal(k, v)
        for k, v in (
            (":method", "POST"), (":scheme", "http"),
            (":path", "/openiap.FlowService/SetupStream"), (":authority", f"{host}:{port}"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        )
    )  # fmt: skip
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(0x4, 0, 0, b""))
    writer.write(_h2_frame(0x1, 0x4, 1, headers))  # HEADERS, END_HEADERS
    writer.write(_h2_frame(0x0, 0x1, 1, body))  # DATA, END_STREAM
    await writer.drain()
    outcome: dict[str, Any] = {"end": None, "status": None, "commands": []}
    data = b""
    try:
        while outcome["end"] is None:
            head = await asyncio.wait_for(reader.readexactly(9), 15)
            length = int.from_bytes(head[:3], "big")
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = await asyncio.wait_for(reader.readexactly(length), 15)
            if kind == 0x4 and not flags & 0x1:  # SETTINGS: acknowledge
                writer.write(_h2_frame(0x4, 0x1, 0, b""))
            elif kind == 0x6 and not flags & 0x1:  # PING: answer
                writer.write(_h2_frame(0x6, 0x1, 0, payload))
            elif kind == 0x0 and stream == 1:
                data += payload
            elif kind == 0x1 and stream == 1 and flags & 0x1:
                outcome["end"] = "trailers"
                found = re.search(rb"grpc-status.(\d+)", payload)
                outcome["status"] = int(found.group(1)) if found else None
            elif kind == 0x3 and stream == 1:
                outcome["end"] = "reset"
            elif kind == 0x7:
                outcome["end"] = "goaway"
            await writer.drain()
    except asyncio.IncompleteReadError:
        outcome["end"] = "closed"
    finally:
        writer.close()
    while len(data) >= 5:
        size = int.from_bytes(data[1:5], "big")
        outcome["commands"].append(pb.Envelope.FromString(data[5 : 5 + size]).command)
        data = data[5 + size :]
    return outcome


async def test_a_bad_grpc_length_prefix_ends_only_that_call(servers: dict[str, Any]) -> None:
    host, port = servers["grpc"].rsplit(":", 1)
    ping = pb.Envelope(command="ping", id="p").SerializeToString()
    bystander = RawGrpc(servers["grpc"])
    try:
        assert (await bystander.read()).command == "ping"
        # a message that claims 1000 bytes, then the stream ends after a few: grpc drops the
        # partial message and the call ends; nothing was dispatched (no pong)
        short = b"\x00" + struct.pack(">I", 1000) + ping
        outcome = await _h2_stream_outcome(host, int(port), short)
        assert outcome["end"] in ("trailers", "reset") and outcome["commands"] == ["ping"]
        # the compressed flag set though no compression was negotiated: status INTERNAL
        compressed = b"\x01" + struct.pack(">I", len(ping)) + ping
        outcome = await _h2_stream_outcome(host, int(port), compressed)
        assert outcome["end"] in ("trailers", "reset") and outcome["commands"] == ["ping"]
        assert outcome["status"] == grpc.StatusCode.INTERNAL.value[0]
        # the other call never noticed
        reply = await bystander.request("ping", None, "p1")
        assert reply.command == "pong"
    finally:
        await bystander.close()
