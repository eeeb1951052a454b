"""Drive the Rust-core client (PyPI ``openiap-edge`` 0.0.38) against a server; print a JSON report.

Run with the interpreter of ``.venv-edge`` (its package is also called ``openiap``).
Usage: ``python edge_driver.py <url> <username> <password>``. The work item queue ``edgewiq``
must exist (this client cannot create one). A step that fails records its error and the rest go
on; the process ends with ``os._exit`` (the library's threads linger).

Two clients in this process: the first signs in with the password, the second with the first
one's jwt and serves the queue ``edgeq`` that the first calls with ``rpc_async``.
"""

import json
import os
import sys
import tempfile
import threading
import time

from openiap import Client

URL, USERNAME, PASSWORD = sys.argv[1:4]
report = {}


def read_text(path):
    with open(path) as f:
        return f.read()


def step(name, work):
    try:
        report[name] = work()
    except Exception as exc:  # record and go on
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return report[name]


def wait_for(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def other_client(client, jwt):
    second = Client()
    step("connect_jwt", lambda: bool(second.connect(URL)))
    signed = step("signin_jwt", lambda: second.signin(jwt))
    if isinstance(signed, dict) and "jwt" in signed:
        report["signin_jwt"] = {"jwt": bool(signed["jwt"]), "success": signed.get("success")}
    step("jwt_count", lambda: second.count("edgetest", "{}"))

    def serve(event, _count):
        data = json.loads(event["data"])
        data.pop("__jwt", None)  # added by the server: the sender did not strip its token
        sender = data.pop("__user", {}).get("username")
        return {"echo": data, "queue": event["queuename"], "sender": sender}

    step("registerqueue", lambda: second.register_queue("edgeq", serve))
    step("rpc", lambda: client.rpc_async({"x": 1}, queuename="edgeq", timeout=20))


def watch_events(client):
    events = []
    watch_id = step("watch", lambda: client.watch("edgewatch", "", lambda e, _n: events.append(e)))
    step("watch_insert", lambda: client.insert_one("edgewatch", '{"name": "watched"}'))
    wait_for(lambda: events)
    report["watchevents"] = [
        [e["operation"], json.loads(e["document"]).get("name")] for e in events
    ]
    if isinstance(watch_id, str):
        step("unwatch", lambda: client.unwatch(watch_id))


def workitems(client):
    pushed = step(
        "pushworkitem",
        lambda: client.push_workitem(wiq="edgewiq", name="edge item", payload='{"a": 1}'),
    )
    if isinstance(pushed, dict) and "state" in pushed:
        report["pushworkitem"] = {
            "id": pushed["id"],
            "state": pushed["state"],
            "payload": json.loads(pushed["payload"]),
        }
    with tempfile.TemporaryDirectory() as folder:
        popped = step(
            "popworkitem", lambda: client.pop_workitem(wiq="edgewiq", downloadfolder=folder)
        )
    if isinstance(popped, dict) and "state" in popped:
        report["popworkitem"] = {"id": popped["id"], "state": popped["state"]}
        changed = {**popped, "state": "successful", "payload": '{"a": 2}'}
        updated = step("updateworkitem", lambda: client.update_workitem(changed))
        if isinstance(updated, dict) and "state" in updated:
            report["updateworkitem"] = {
                "state": updated["state"],
                "payload": json.loads(updated["payload"]),
            }


def main():
    client = Client()
    step("connect", lambda: bool(client.connect(URL)))
    signed = step("signin", lambda: client.signin(USERNAME, PASSWORD))
    if isinstance(signed, dict) and "jwt" in signed:
        report["signin"] = {"jwt": bool(signed["jwt"]), "success": signed.get("success")}
    doc = step(
        "insertone", lambda: json.loads(client.insert_one("edgetest", '{"name": "edge", "n": 1}'))
    )
    step("query", lambda: json.loads(client.query("edgetest", '{"n": 1}')))
    step("count", lambda: client.count("edgetest", "{}"))
    if isinstance(doc, dict) and doc.get("_id"):
        doc = {**doc, "name": "edge!"}
        step("updateone", lambda: json.loads(client.update_one("edgetest", json.dumps(doc))))
        step("deleteone", lambda: client.delete_one("edgetest", doc["_id"]))
    jwt = signed.get("jwt") if isinstance(signed, dict) else None
    if jwt:
        other_client(client, jwt)
    watch_events(client)
    workitems(client)
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "edge.txt")
        with open(source, "w") as f:
            f.write("uploaded by the rust core")
        uploaded = step("upload", lambda: client.upload(source, "edge.txt", "text/plain", "", ""))
        file_id = uploaded if isinstance(uploaded, str) else None
        if file_id:
            out = os.path.join(folder, "out")
            os.mkdir(out)
            step("download", lambda: client.download("", file_id, out, ""))
            names = os.listdir(out)
            report["downloaded"] = {n: read_text(os.path.join(out, n)) for n in names}
    bad = Client()
    step("bad_connect", lambda: bool(bad.connect(URL)))
    step("signin_bad", lambda: client.signin(USERNAME, "wrong password"))


worker = threading.Thread(target=main, daemon=True)
worker.start()
worker.join(90)
print(json.dumps(report, default=str), flush=True)
os._exit(0)
