"""The OpenIAP protobuf protocol with the official clients over websocket ``/ws/v2`` and gRPC:
PyPI ``openiap`` 0.0.37, npm ``@openiap/nodeapi`` 0.0.39 and the Rust core (PyPI
``openiap-edge`` 0.0.38); plus malformed envelopes from a raw websocket.

Each client, on each transport, signs in with a password and with a jwt, has a bad password
refused, inserts/queries/updates/deletes documents, calls a queue served by a second client
(request/reply), receives a watch event, pushes/pops/updates a work item and downloads a file.
What a client's API lacks, and so is not tested with it:

- pyapi 0.0.37 has no upload and cannot create work item queues (the fixture saves the file
  and creates the queues through the JSON protocol); over gRPC it allows one connection per
  process, so the queue's second client is a worker process.
- openiap-edge 0.0.38 cannot create work item queues either; it uploads the file it downloads.
- nodeapi 0.0.39 has everything; it also creates, changes and deletes a work item queue.

The Python clients run in venvs of their own (``.venv-openiap``, ``.venv-edge``, made by
``scripts/bootstrap --dev``): pyapi needs ``websockets<14`` while iapflow's tests use a newer one,
and both install a top-level ``openiap``. The Node client lives in ``tests/clients/node``; without
Node.js its tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.testing import JsonClient, make_test_config, running_server

ROOT = Path(__file__).resolve().parents[1]
PYAPI_PYTHON = ROOT / ".venv-openiap" / "bin" / "python"
DRIVER = Path(__file__).parent / "clients" / "pyapi_driver.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def proto_server(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """A server with gRPC on; yields its ws base URL and gRPC port."""
    grpc_port = _free_port()
    config = make_test_config(tmp_path, mongo_storage, grpc={"port": grpc_port})
    async with running_server(config) as base:
        yield {"ws": base, "grpc": grpc_port}


def _pyapi_python() -> str:
    if not PYAPI_PYTHON.exists():
        pytest.fail(f"{PYAPI_PYTHON} is missing: run ./scripts/bootstrap --dev")
    return str(PYAPI_PYTHON)


async def _run_pyapi(
    mode: str, url: str, username: str, password: str, file_id: str = "-"
) -> dict[str, Any]:
    """Run the driver to the end and return its report."""
    process = await asyncio.create_subprocess_exec(
        _pyapi_python(), str(DRIVER), mode, url, username, password, file_id,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        pytest.fail(f"pyapi driver hung\n{out.decode()}\n{err.decode()[-3000:]}")
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if not lines:
        pytest.fail(f"pyapi driver printed no report\n{out.decode()}\n{err.decode()[-3000:]}")
    sys.stderr.write(err.decode()[-2000:] + "\n" + lines[-1] + "\n")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


async def _start_pyapi_worker(url: str) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """A driver process serving queue ``pytestq``, once it says it is ready, and its report."""
    process = await asyncio.create_subprocess_exec(
        _pyapi_python(), str(DRIVER), "worker", url, "admin", "admin", "-",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
    except TimeoutError:
        line = b""
    report = json.loads(line) if line.startswith(b"{") else {}
    if not report.get("ready"):
        process.kill()
        _, err = await process.communicate()
        pytest.fail(f"pyapi worker did not start: {line.decode()}\n{err.decode()[-3000:]}")
    return process, report


@pytest.fixture
async def uploaded_file(proto_server: dict[str, Any]) -> str:
    """A file saved through the JSON protocol, for the client to download, and the work item
    queue the client uses (pyapi 0.0.37 can create neither)."""
    async with JsonClient(proto_server["ws"] + "/ws") as admin:
        await admin.signin("admin", "admin")
        await admin.call("addworkitemqueue", name="pytestwiq")
        await admin.call("addworkitemqueue", name="nodewiq")
        await admin.call("addworkitemqueue", name="edgewiq")
        reply = await admin.call(
            "savefile",
            filename="hello.txt",
            mimeType="text/plain",
            file=base64.b64encode(b"hello from iapflow").decode(),
        )
    return str(reply["id"])


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ws", "grpc"])
async def test_pyapi_client_end_to_end(
    proto_server: dict[str, Any], uploaded_file: str, transport: str
) -> None:
    if transport == "ws":
        # every connection in one process
        url = proto_server["ws"] + "/ws/v2"
        report = await _run_pyapi("full", url, "admin", "admin", uploaded_file)
    else:
        # one connection per process (see the driver's docstring); a worker process serves the
        # queue that the main one calls
        url = f"grpc://127.0.0.1:{proto_server['grpc']}"
        worker, served = await _start_pyapi_worker(url)
        try:
            report = await _run_pyapi("single", url, "admin", "admin", uploaded_file)
        finally:
            worker.kill()
            await worker.wait()
        report["registerqueue"] = served["registerqueue"]
        with_jwt = await _run_pyapi("signin", url, report["jwt"], "-")
        report["signin_jwt"], report["jwt_count"] = with_jwt["signin"], with_jwt["count"]
        report["signin_bad"] = (await _run_pyapi("signin", url, "admin", "wrong"))["signin"]
    assert report["signin"]["username"] == "admin", report
    assert "admins" in report["signin"]["roles"]
    assert report["jwt"]
    assert report["getelement"] == "hello"
    assert report["insertone"]["name"] == "py one" and report["insertone"]["_id"]
    assert [d["name"] for d in report["insertmany"]] == ["py two", "py three"]
    assert [d["n"] for d in report["query"]] == [1, 2, 3]
    assert all(set(d) <= {"_id", "name"} for d in report["query_noorder"])
    assert report["count"] == 3
    assert report["aggregate"][0]["s"] == 6
    assert report["updateone"]["name"] == "py one!"
    assert report["updatedocument"] == {"matchedCount": 2, "modifiedCount": 2}
    assert report["insertorupdateone"]["name"] == "uniq"
    assert report["deleteone"] == 1
    assert report["deletemany"] == 2
    assert report["count_after"] == 1
    assert "pytest" in report["listcollections"]
    assert "SERVER ERROR" in report["unknown_collection_error"]["error"]
    assert report["signin_jwt"]["username"] == "admin"
    assert report["jwt_count"] >= 1
    assert "SERVER ERROR" in report["signin_bad"]["error"]
    assert report["registerqueue"] == "pytestq"
    assert report["rpc"] == {"echo": {"x": 1}, "queue": "pytestq"}
    assert report["watchevents"] == [["insert", "watched"]]
    assert report["pushworkitem"]["state"] == "new"
    assert report["pushworkitem"]["payload"] == {"a": 1}
    assert report["pushworkitem"]["has_nextrun"] is True
    assert report["popworkitem"]["_id"] == report["pushworkitem"]["_id"]
    assert report["popworkitem"]["state"] == "processing"
    assert report["updateworkitem"] == {"state": "successful", "payload": {"a": 2}}
    assert report["popworkitem_empty"] is None
    assert report["download"] == {"filename": "hello.txt", "content": "hello from iapflow"}


NODE_DIR = Path(__file__).parent / "clients" / "node"


def _require_node() -> None:
    """Skip without Node.js on a developer machine; in CI (CI=true) that is a failure."""
    if shutil.which("node") is None:
        message = "Node.js is needed for @openiap/nodeapi (install Node.js 20 and npm)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true, so this fails instead of skipping")
        pytest.skip(message)
    if not (NODE_DIR / "node_modules" / "@openiap" / "nodeapi").exists():
        pytest.fail(
            f"@openiap/nodeapi is not installed in {NODE_DIR}: run ./scripts/bootstrap --dev"
        )


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ws", "grpc"])
async def test_nodeapi_client_end_to_end(
    proto_server: dict[str, Any], uploaded_file: str, transport: str
) -> None:
    _require_node()
    if transport == "ws":
        url = proto_server["ws"] + "/ws/v2"
    else:
        url = f"grpc://127.0.0.1:{proto_server['grpc']}"
    process = await asyncio.create_subprocess_exec(
        "node", "nodeapi_driver.js", url, "admin", "admin", cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 180)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, f"no report\n{out.decode()[-3000:]}\n{err.decode()[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    sys.stderr.write(lines[-1] + "\n")
    assert "fatal" not in report, report["fatal"]
    assert report["signin"]["username"] == "admin"
    assert report["jwt"]
    assert report["insertone"]["name"] == "node one"
    assert [d["name"] for d in report["query"]] == ["node one"]
    assert report["count"] == 1
    assert report["updateone"]["name"] == "node one!"
    assert report["updatedocument"] == {"matchedCount": 1, "modifiedCount": 1}
    assert report["watchevents"] == [["insert", "watched"]]
    assert report["deleteone"] == 1
    assert report["registerqueue"] == "nodeq"
    # served by the second connection; nodeapi hands the sender's user to the callback
    assert report["rpc"] == {"echo": {"x": 1}, "queue": "nodeq", "sender": "admin"}
    assert report["pushworkitem"]["state"] == "new"
    assert report["popworkitem"]["_id"] == report["pushworkitem"]["_id"]
    assert report["popworkitem"]["state"] == "successful"
    queue = report["addworkitemqueue"]
    assert queue["name"] == "nodewiq2" and queue["maxretries"] == 2 and queue["_id"]
    assert report["updateworkitemqueue"] == {**queue, "maxretries": 4}
    assert report["deleteworkitemqueue"] == "deleted"
    assert report["upload"]["id"]
    assert report["download"] == {"filename": "up.txt", "content": "uploaded by nodeapi"}
    assert report["signin_jwt"]["username"] == "admin"
    assert report["jwt_count"] >= 1
    assert "error" in report["signin_bad"], report["signin_bad"]


def test_missing_node_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _require_node()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        _require_node()


EDGE_PYTHON = ROOT / ".venv-edge" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ws", "grpc"])
async def test_rust_core_client_end_to_end(
    proto_server: dict[str, Any], uploaded_file: str, transport: str
) -> None:
    if not EDGE_PYTHON.exists():
        pytest.fail(f"{EDGE_PYTHON} is missing: run ./scripts/bootstrap --dev")
    if transport == "ws":
        url = proto_server["ws"] + "/ws/v2"
    else:
        url = f"grpc://127.0.0.1:{proto_server['grpc']}"
    process = await asyncio.create_subprocess_exec(
        str(EDGE_PYTHON), str(Path(__file__).parent / "clients" / "edge_driver.py"),
        url, "admin", "admin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, f"no report\n{out.decode()[-3000:]}\n{err.decode()[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    sys.stderr.write(lines[-1] + "\n")
    assert report["connect"] is True
    assert report["signin"]["jwt"] is True
    assert report["insertone"]["name"] == "edge"
    assert [d["name"] for d in report["query"]] == ["edge"]
    assert report["count"] == 1
    assert report["updateone"]["name"] == "edge!"
    assert report["deleteone"] == 1
    assert report["signin_jwt"] == {"jwt": True, "success": True}
    assert report["jwt_count"] == 0
    assert report["registerqueue"] == "edgeq"
    assert report["rpc"] == {"echo": {"x": 1}, "queue": "edgeq", "sender": "admin"}
    assert report["watchevents"] == [["insert", "watched"]]
    assert report["pushworkitem"]["state"] == "new"
    assert report["pushworkitem"]["payload"] == {"a": 1}
    assert report["popworkitem"] == {"id": report["pushworkitem"]["id"], "state": "processing"}
    assert report["updateworkitem"] == {"state": "successful", "payload": {"a": 2}}
    assert report["downloaded"] == {"edge.txt": "uploaded by the rust core"}
    assert report["bad_connect"] is True
    assert "error" in report["signin_bad"]


# -- malformed input on /ws/v2 ------------------------------------------------------------------


def _frame(envelope: pb.Envelope) -> bytes:
    payload = envelope.SerializeToString()
    return struct.pack("<I", len(payload)) + payload


async def _next_envelope(ws: Any) -> pb.Envelope:
    """Read one server envelope (length message, then payload message)."""
    length = struct.unpack("<I", await asyncio.wait_for(ws.recv(), 10))[0]
    payload = b""
    while len(payload) < length:
        payload += await asyncio.wait_for(ws.recv(), 10)
    envelope = pb.Envelope()
    envelope.ParseFromString(payload)
    return envelope


async def _request(ws: Any, command: str, msg: Any, request_id: str) -> pb.Envelope:
    envelope = pb.Envelope(command=command, id=request_id)
    if msg is not None:
        envelope.data.Pack(msg)
    await ws.send(_frame(envelope))
    while True:
        reply = await _next_envelope(ws)
        if reply.rid == request_id:
            return reply


def _error_text(envelope: pb.Envelope) -> str:
    error = pb.ErrorResponse()
    envelope.data.Unpack(error)
    return error.message


async def test_malformed_envelopes_get_errors_and_other_connections_keep_working(
    proto_server: dict[str, Any],
) -> None:
    url = proto_server["ws"] + "/ws/v2"
    async with websockets.connect(url) as bystander, websockets.connect(url) as ws:
        greeting = await _next_envelope(ws)
        assert greeting.command == "ping" and greeting.seq == 0
        await _next_envelope(bystander)
        signin = await _request(
            bystander, "signin", pb.SigninRequest(username="admin", password="admin"), "1"
        )
        assert signin.command == "signinreply"

        # bytes that are not an Envelope: an error envelope, the connection stays
        garbage = b"\xff\xff\xff\xff\xff"
        await ws.send(struct.pack("<I", len(garbage)) + garbage)
        reply = await _next_envelope(ws)
        assert reply.command == "error" and "Envelope" in _error_text(reply)

        # unknown command and a request before sign-in
        reply = await _request(ws, "nosuchcommand", None, "u1")
        assert reply.command == "error" and "Unknown command" in _error_text(reply)
        reply = await _request(ws, "query", pb.QueryRequest(collectionname="x"), "q0")
        assert reply.command == "error" and "signed in" in _error_text(reply).lower()

        # wrong payload type: a Stream's bytes where a SigninRequest belongs
        wrong = pb.Envelope(command="signin", id="w1")
        wrong.data.Pack(pb.Stream(data=b"\x12\x34\xff\xff"))
        await ws.send(_frame(wrong))
        reply = await _next_envelope(ws)
        assert reply.command == "error" and reply.rid == "w1"

        # a length and its envelope split over messages, and two envelopes in one message
        ping = pb.Envelope(command="ping", id="p1")
        frame = _frame(ping)
        await ws.send(frame[:2])
        await ws.send(frame[2:] + _frame(pb.Envelope(command="ping", id="p2")))
        pongs = [await _next_envelope(ws), await _next_envelope(ws)]
        assert [(p.command, p.rid) for p in pongs] == [("pong", "p1"), ("pong", "p2")]
        assert pongs[1].seq == pongs[0].seq + 1

        # a text frame
        await ws.send("not binary")
        reply = await _next_envelope(ws)
        assert reply.command == "error"

        # a length prefix over the limit: error, then the connection is closed
        await ws.send(struct.pack("<I", 2**31))
        reply = await _next_envelope(ws)
        assert reply.command == "error" and "limit" in _error_text(reply)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)

        # the other connection never noticed
        query = pb.QueryRequest(collectionname="users", query='{"username": "admin"}')
        reply = await _request(bystander, "query", query, "2")
        assert reply.command == "queryreply"
        results = pb.QueryResponse()
        reply.data.Unpack(results)
        assert json.loads(results.results)[0]["username"] == "admin"
