"""Node-RED instances cannot reach around the API: a user who is not an admin deploys flows
through the Admin API of its own instance (real Node-RED on the process runtime, sandboxed by
bubblewrap, the server on the embedded store with its generated credentials) and tries to
read the token key, the store's files and another user's folder, to reach the store, another
user's instance and the server's port, and to run host commands: with the exec and file
nodes, from a function node (``process``, ``require``, ``global.process.mainModule``, the
``this.constructor.constructor`` escape) and with HTTP request nodes. Every attempt fails. The
same flow in a deployment configured to trust its owners (no sandbox, host nodes for
everyone) succeeds, which shows the probe reaches what it claims to. Without a sandbox, an
instance of a user who is not an admin is refused, naming the switch.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodered_site import V2, Site, running

from iapflow import wellknown
from iapflow.platform import Platform
from iapflow.testing import JsonClient, ReplyError, make_test_config, serving

pytestmark = pytest.mark.slow

# The function node's probe: every attempt it makes, and what came of it.
PROBE = r"""
const report = {};
const attempt = (name, fn) => {
    try { report[name] = "ok: " + String(fn()).slice(0, 300); }
    catch (e) {
        report[name] = "refused: " + String((e && (e.code || e.message)) || e).slice(0, 200);
    }
};
const defined = (value) => {
    if (value === undefined) throw {code: "undefined"};
    return value;
};
attempt("process", () => defined(typeof process === "undefined" ? undefined : process).pid);
attempt("require", () => defined(typeof require === "undefined" ? undefined : require)("fs"));
attempt("globalProcess", () => global.process.mainModule.filename);
let escaped = null;
attempt("escape", () => {
    escaped = this.constructor.constructor("return process")();
    return escaped.pid;
});
const tcp = (port) => new Promise((done) => {
    if (!escaped) { done("refused: no process"); return; }
    const net = escaped.mainModule.require("net");
    const socket = net.connect(port, "127.0.0.1");
    socket.on("connect", () => { socket.destroy(); done("ok: connected"); });
    socket.on("error", (e) => done("refused: " + e.code));
    setTimeout(() => { socket.destroy(); done("refused: timeout"); }, 3000);
});
if (escaped) {
    const fs = escaped.mainModule.require("fs");
    const cp = escaped.mainModule.require("child_process");
    attempt("uid", () => escaped.getuid());
    attempt("jwtSecret", () => fs.readFileSync(TARGETS.secret, "utf8"));
    attempt("storeFiles", () => fs.readdirSync(TARGETS.store).join(","));
    attempt("otherFolder", () => fs.readdirSync(TARGETS.other).join(","));
    attempt("dataDir", () => fs.readdirSync(TARGETS.data).join(","));
    attempt("dotdot", () => fs.readFileSync("../../" + TARGETS.secret, "utf8"));
    attempt("root", () => fs.readdirSync("/").join(","));
    attempt("shell", () => cp.execSync("id").toString());
    attempt("program", () => cp.execFileSync("/usr/bin/id").toString());
}
Promise.all([tcp(TARGETS.storePort), tcp(TARGETS.otherPort), tcp(TARGETS.serverPort)]).then(
    ([store, other, server]) => {
        report.storePort = store; report.otherPort = other; report.serverPort = server;
        msg.payload = {_type: "probe", marker: TARGETS.marker, report};
        node.send(msg);
    }
);
return null;
"""


def probe_flows(targets: dict[str, Any]) -> list[dict[str, Any]]:
    """inject -> probe function -> api add; and HTTP request nodes to the store and to the
    other instance, whose answers also land in ``probes``."""
    code = f"const TARGETS = {json.dumps(targets)};\n{PROBE}"
    flows: list[dict[str, Any]] = [
        {"id": "t1", "type": "tab", "label": "probe"},
        {"id": "go", "type": "inject", "z": "t1", "props": [{"p": "payload"}], "once": True,
         "onceDelay": 0.2, "repeat": "", "topic": "", "payload": "", "payloadType": "date",
         "wires": [["probe1", "httpstore", "httpother"]]},
        {"id": "probe1", "type": "function", "z": "t1", "func": code, "outputs": 1,
         "wires": [["save1"]]},
        {"id": "save1", "type": "api add", "z": "t1", "collection": "probes", "wires": [[]]},
    ]  # fmt: skip
    for node_id, port in (("httpstore", targets["storePort"]), ("httpother", targets["otherPort"])):
        flows += [
            {"id": node_id, "type": "http request", "z": "t1", "method": "GET", "ret": "txt",
             "url": f"http://127.0.0.1:{port}/", "wires": [[f"{node_id}-map"]]},
            {"id": f"{node_id}-map", "type": "function", "z": "t1", "outputs": 1,
             "func": f"msg.payload = {{_type: 'probe', marker: {json.dumps(targets['marker'])}, "
                     f"http: {json.dumps(node_id)}, status: String(msg.statusCode)}}; return msg;",
             "wires": [["save1"]]},
        ]  # fmt: skip
    return flows


def host_node_flows(targets: dict[str, Any]) -> list[dict[str, Any]]:
    """An exec node and a file node aimed at the token key (with ``..``)."""
    escape = "../" * 12 + targets["secret"].lstrip("/")
    return [
        {"id": "t2", "type": "tab", "label": "host"},
        {"id": "go2", "type": "inject", "z": "t2", "props": [{"p": "payload"}], "once": True,
         "onceDelay": 0.2, "repeat": "", "topic": "", "payload": "", "payloadType": "date",
         "wires": [["ex1", "rd1"]]},
        {"id": "ex1", "type": "exec", "z": "t2", "command": f"cat {targets['secret']}",
         "addpay": "", "append": "", "useSpawn": "false", "timer": "", "oldrc": False,
         "wires": [["keep"], [], []]},
        {"id": "rd1", "type": "file in", "z": "t2", "filename": escape, "format": "utf8",
         "wires": [["keep"]]},
        {"id": "keep", "type": "function", "z": "t2", "outputs": 1,
         "func": f"msg.payload = {{_type: 'probe', marker: {json.dumps(targets['marker'])}, "
                 "hostnode: String(msg.payload)}; return msg;", "wires": [["save2"]]},
        {"id": "save2", "type": "api add", "z": "t2", "collection": "probes", "wires": [[]]},
    ]  # fmt: skip


class Deployment:
    """A server on the embedded store with the process runtime, and a user's instance."""

    def __init__(self, site: Site, platform: Platform, data_dir: Path) -> None:
        self.site = site
        self.platform = platform
        self.data_dir = data_dir

    async def instance(self, admin: JsonClient) -> tuple[JsonClient, dict[str, Any]]:
        user = await self.site.user(admin, wellknown.PERSONAL_NODERED_USERS)
        await user.call("ensurenoderedinstance")
        return user, await running(user)

    def targets(self, other: dict[str, Any], marker: str) -> dict[str, Any]:
        embedded = getattr(self.platform.storage, "embedded", None)
        assert embedded is not None, "this test needs the embedded store"
        return {
            "marker": marker,
            "secret": str(self.data_dir / "jwt_secret"),
            "store": str(self.data_dir / "mongo"),
            "data": str(self.data_dir),
            "other": str(self.data_dir / "nodered" / "instances" / other["name"]),
            "storePort": embedded.port,
            "otherPort": other["port"],
            "serverPort": self.platform.config.server.port,
        }


@pytest.fixture
async def deployment(
    tmp_path: Path, node_red_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Deployment]:
    """``request.param`` holds extra ``[agents]`` options (none: the defaults)."""
    extra = getattr(request, "param", {})
    agents = {"runtime": "process", "install_dir": str(node_red_dir), "base_port": 19400,
              "stop_timeout_seconds": 5.0, **extra}  # fmt: skip
    storage = {"backend": "mongo", "url": "embedded", "database": "openflow",
               "sync_on_commit": False}  # fmt: skip
    config = make_test_config(tmp_path, storage, agents=agents, auth={"jwt_secret": ""})
    async with AsyncExitStack() as stack:
        base, platform = await stack.enter_async_context(serving(config))
        yield Deployment(Site(stack, base), platform, tmp_path)


async def deploy(pod: dict[str, Any], user: JsonClient, flows: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {user.jwt}", "Node-RED-Deployment-Type": "full", **V2}
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(pod["url"] + "flows", headers=headers, json={"flows": flows})
    assert reply.status_code == 200, reply.text


async def probes(user: JsonClient, marker: str, count: int, within: float = 60) -> list[Any]:
    found: list[Any] = []
    for _ in range(int(within * 10)):
        found = (await user.call("query", collectionname="probes", query={"marker": marker}))[
            "result"
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    return found


async def test_a_users_flows_cannot_reach_around_the_api(deployment: Deployment) -> None:
    admin = await deployment.site.client()
    await admin.signin("admin", "admin")
    alice, pod = await deployment.instance(admin)
    _bob, other = await deployment.instance(admin)
    marker = uuid.uuid4().hex
    targets = deployment.targets(other, marker)
    # The exec and file nodes are not there for a user who is not an admin: a flow with them
    # waits for its missing node types and never runs.
    await deploy(pod, alice, host_node_flows(targets))
    log = ""
    for _ in range(100):
        log = (await alice.call("getnoderedinstancelog", lines=80))["result"]
        if "exec" in log and "file in" in log:
            break
        await asyncio.sleep(0.1)
    assert "Waiting for missing types" in log and "exec" in log and "file in" in log, log
    await deploy(pod, alice, probe_flows(targets))
    found = await probes(alice, marker, 3)
    assert len(found) == 3, found
    report = next(p["report"] for p in found if "report" in p)
    http = {p["http"]: p["status"] for p in found if "http" in p}
    # what the function node's sandbox gives, as Node-RED has it
    assert report["process"].startswith("refused"), report
    assert report["require"].startswith("refused"), report
    assert report["globalProcess"].startswith("refused"), report
    # the escape to Node.js's process works (Node-RED's vm is no boundary): the OS is
    assert report["escape"].startswith("ok"), report
    assert report["uid"] != "ok: 0"
    for attempt in ("jwtSecret", "storeFiles", "otherFolder", "dataDir", "dotdot"):
        assert report[attempt] == "refused: ENOENT", (attempt, report)
    assert report["shell"] == "refused: ENOENT" and report["program"] == "refused: ENOENT"
    seen = set(report["root"].removeprefix("ok: ").split(","))
    assert seen <= {"instance", "iapflow", "node-red", "usr", "lib", "lib64", "etc", "proc",
                    "dev", "tmp", "settings.js", "drop-privileges.js"}, seen  # fmt: skip
    for port in ("storePort", "otherPort", "serverPort"):
        assert report[port] == "refused: ECONNREFUSED", (port, report)
    assert http == {"httpstore": "ECONNREFUSED", "httpother": "ECONNREFUSED"}, http
    for user in (alice, _bob):
        await user.call("deletenoderedinstance")


@pytest.mark.parametrize(
    "deployment",
    [{"sandbox": "none", "trusted_owners": True, "host_nodes": "everyone"}],
    indirect=True,
)
async def test_a_deployment_that_trusts_its_owners_lets_them_reach_the_host(
    deployment: Deployment,
) -> None:
    admin = await deployment.site.client()
    await admin.signin("admin", "admin")
    alice, pod = await deployment.instance(admin)
    _bob, other = await deployment.instance(admin)
    marker = uuid.uuid4().hex
    targets = deployment.targets(other, marker)
    secret = (deployment.data_dir / "jwt_secret").read_text().strip()
    await deploy(pod, alice, probe_flows(targets) + host_node_flows(targets))
    found = await probes(alice, marker, 5)
    report = next(p["report"] for p in found if "report" in p)
    assert report["jwtSecret"] == f"ok: {secret}"
    assert report["shell"].startswith("ok: uid=")
    assert report["storePort"] == "ok: connected" and report["otherPort"] == "ok: connected"
    host = [p["hostnode"] for p in found if "hostnode" in p]
    assert len(host) == 2 and all(secret in text for text in host), host
    for user in (alice, _bob):
        await user.call("deletenoderedinstance")


@pytest.mark.parametrize("deployment", [{"sandbox": "none"}], indirect=True)
async def test_without_a_sandbox_only_admins_instances_start(deployment: Deployment) -> None:
    admin = await deployment.site.client()
    await admin.signin("admin", "admin")
    user = await deployment.site.user(admin, wellknown.PERSONAL_NODERED_USERS)
    with pytest.raises(ReplyError, match=r"run only in a sandbox.*trusted_owners = true"):
        await user.call("ensurenoderedinstance")
    await admin.call("ensurenoderedinstance")  # admins are trusted
    assert (await running(admin))["state"] == "running"
    await admin.call("deletenoderedinstance")


async def test_instances_run_as_their_own_users_with_only_their_folder(
    deployment: Deployment,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("instances get their own OS users only when the server runs as root")
    admin = await deployment.site.client()
    await admin.signin("admin", "admin")
    _alice, first = await deployment.instance(admin)
    _bob, second = await deployment.instance(admin)
    folders = [deployment.data_dir / "nodered" / "instances" / p["name"] for p in (first, second)]
    uids = [json.loads((f / "state.json").read_text())["uid"] for f in folders]
    assert len(set(uids)) == 2 and all(uid >= 200000 for uid in uids)
    for folder, uid in zip(folders, uids, strict=True):
        assert (folder / "home").stat().st_uid == uid
        assert (folder / "state.json").stat().st_uid == 0  # the spec stays the server's
        assert (folder / "settings.js").stat().st_mode & 0o077 == 0
    for user in (_alice, _bob):
        await user.call("deletenoderedinstance")
