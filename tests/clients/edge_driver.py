"""Drive the Rust-core client (PyPI ``openiap-edge`` 0.0.38) against a server; print a JSON report.

Run with the interpreter of ``.venv-edge`` (its package is also called ``openiap``).
Usage: ``python edge_driver.py <url> <username> <password>``. A step that fails records its
error and the rest go on; the process ends with ``os._exit`` (the library's threads linger).
"""

import json
import os
import sys
import tempfile
import threading

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
