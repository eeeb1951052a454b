"""The docker runtime against a FAKE Docker Engine API (an aiohttp app in this file), since
there is no Docker engine here: the contract suite, and the exact requests the runtime sends
(container body with env, labels, traefik routing, memory limit and restart policy; image pull
when missing; removal with volumes). What a fake cannot prove (that Node-RED runs in the
image, networking, traefik) needs a real engine."""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from iapflow.contracts.agents import AgentRuntimeError, InstanceSpec, RuntimeContext
from iapflow.errors import ConfigError
from iapflow.testing.agent_runtime_contract import AgentRuntimeContract
from iapflow_mongo.embedded import free_port
from iapflow_nodered.docker import DockerRuntime, build_docker


@dataclass
class FakeDockerEngine:
    """A fake of the parts of the Docker Engine API the runtime uses; records every request."""

    images: set[str] = field(default_factory=lambda: {"nodered/node-red:4.1"})
    pullable: bool = True
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def calls(self, method: str, pattern: str) -> list[tuple[dict[str, str], Any]]:
        """Recorded (query, body) of requests whose unversioned path matches ``pattern``."""
        return [(q, b) for m, p, q, b in self.requests if m == method and re.fullmatch(pattern, p)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = re.sub(r"^/v[0-9.]+/", "/", request.path)
        body = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        self.requests.append((request.method, path, dict(request.query), body))
        method = request.method
        if path in ("/version", "/_ping"):
            return web.json_response({"ApiVersion": "1.43", "Version": "fake-24.0"})
        if match := re.fullmatch(r"/images/(.+)/json", path):
            if match.group(1) in self.images:
                return web.json_response({"Id": "sha256:fake"})
            return self.error(404, f"No such image: {match.group(1)}")
        if path == "/images/create" and method == "POST":
            if not self.pullable:
                return self.error(404, "pull access denied")
            self.images.add(request.query["fromImage"])
            return web.json_response({"status": "Downloaded newer image"})
        if path == "/containers/create" and method == "POST":
            name = request.query["name"]
            if name in self.containers:
                return self.error(409, f'Conflict. The container name "/{name}" is already in use')
            if body["Image"] not in self.images:
                return self.error(404, f"No such image: {body['Image']}")
            self.containers[name] = {
                "Id": uuid.uuid4().hex,
                "Name": "/" + name,
                "Config": {"Tty": False, "Labels": body["Labels"], "Env": body["Env"]},
                "HostConfig": body["HostConfig"],
                "State": {"Status": "created", "Running": False, "Pid": 0, "ExitCode": 0},
                "RestartCount": 0,
                "log": [],
            }
            return web.json_response({"Id": self.containers[name]["Id"]}, status=201)
        if path == "/containers/json":
            wanted = json.loads(request.query.get("filters", "{}")).get("label", [])
            found = [
                {"Id": c["Id"], "Names": [c["Name"]], "Labels": c["Config"]["Labels"]}
                for c in self.containers.values()
                if all(
                    any(f"{k}={v}" == w for k, v in c["Config"]["Labels"].items()) for w in wanted
                )
            ]
            return web.json_response(found)
        match = re.fullmatch(r"/containers/([^/]+)(/\w+)?", path)
        if match is None:
            return self.error(404, f"fake engine has no {method} {path}")
        container = self.containers.get(match.group(1))
        if container is None:
            return self.error(404, f"No such container: {match.group(1)}")
        action = match.group(2)
        state = container["State"]
        if action == "/json":
            return web.json_response({k: v for k, v in container.items() if k != "log"})
        if action == "/start":
            if state["Running"]:
                return web.Response(status=304)
            state.update(Status="running", Running=True, Pid=4242)
            container["log"].append("Started flows")
            return web.Response(status=204)
        if action == "/stop":
            if not state["Running"]:
                return web.Response(status=304)
            state.update(Status="exited", Running=False, Pid=0)
            container["log"].append("Stopped flows")
            return web.Response(status=204)
        if action == "/restart":
            state.update(Status="running", Running=True, Pid=4243)
            container["log"].append("Started flows")
            return web.Response(status=204)
        if action == "/logs":
            tail = int(request.query.get("tail", "1000"))
            frames = b""
            for line in container["log"][-tail:]:
                data = (line + "\n").encode()
                frames += struct.pack(">BxxxL", 1, len(data)) + data
            return web.Response(body=frames, content_type="application/vnd.docker.raw-stream")
        if action is None and method == "DELETE":
            if state["Running"] and request.query.get("force") not in ("1", "true", "True"):
                return self.error(409, "container is running: stop it or use force")
            del self.containers[match.group(1)]
            return web.Response(status=204)
        return self.error(404, f"fake engine has no {method} {path}")

    @staticmethod
    def error(status: int, message: str) -> web.Response:
        return web.json_response({"message": message}, status=status)


@pytest.fixture
async def fake_engine() -> AsyncIterator[tuple[FakeDockerEngine, str]]:
    engine = FakeDockerEngine()
    runner = web.AppRunner(engine.app())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield engine, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def docker_runtime(
    fake_engine: tuple[FakeDockerEngine, str], tmp_path: Path
) -> AsyncIterator[DockerRuntime]:
    runtime = build_docker(
        {"url": fake_engine[1], "domain": "nr.example.com", "network": "openiap"},
        RuntimeContext(tmp_path, "ws://api:3000/ws"),
    )
    await runtime.start()
    yield runtime
    await runtime.stop()


class TestDockerRuntimeOnAFakeEngine(AgentRuntimeContract):
    ready_within = 5.0

    @pytest.fixture
    async def runtime(self, docker_runtime: DockerRuntime) -> DockerRuntime:
        return docker_runtime


async def test_fake_engine_gets_the_exact_container_body(
    docker_runtime: DockerRuntime, fake_engine: tuple[FakeDockerEngine, str]
) -> None:
    engine = fake_engine[0]
    spec = InstanceSpec(name="alice", owner_id="u1", env={"TZ": "Europe/Copenhagen"}, memory_mb=300)
    status = await docker_runtime.ensure(spec)
    assert status.state == "running"
    assert status.owner_id == "u1"
    [(query, body)] = engine.calls("POST", "/containers/create")
    assert query == {"name": "alice"}
    assert body == {
        "Image": "nodered/node-red:4.1",
        "Env": ["TZ=Europe/Copenhagen", "api_ws_url=ws://api:3000/ws", "nodered_id=alice"],
        "Labels": {
            "openiap.io/instance": "alice",
            "openiap.io/managed-by": "iapflow",
            "userid": "u1",
            "traefik.enable": "true",
            "traefik.http.routers.alice.rule": "Host(`alice.nr.example.com`)",
            "traefik.http.routers.alice.entrypoints": "web",
            "traefik.http.services.alice.loadbalancer.server.port": "1880",
        },
        "ExposedPorts": {"1880/tcp": {}},
        "HostConfig": {
            "Memory": 300 * 1024 * 1024,
            "RestartPolicy": {"Name": "unless-stopped"},
            "NetworkMode": "openiap",
        },
    }
    assert len(engine.calls("POST", "/containers/alice/start")) == 1
    assert engine.calls("POST", "/images/create") == []
    assert await docker_runtime.remove("alice")
    [(query, _)] = engine.calls("DELETE", "/containers/alice")
    assert query["force"] in ("1", "true", "True") and query["v"] in ("1", "true", "True")


async def test_fake_engine_pulls_a_missing_image_once(
    docker_runtime: DockerRuntime, fake_engine: tuple[FakeDockerEngine, str]
) -> None:
    engine = fake_engine[0]
    spec = InstanceSpec(name="bob", image="openiap/nodered:1.4")
    await docker_runtime.ensure(spec)
    [(query, _)] = engine.calls("POST", "/images/create")
    assert query["fromImage"] == "openiap/nodered:1.4"
    await docker_runtime.stop_instance("bob")
    await docker_runtime.ensure(spec)
    assert len(engine.calls("POST", "/images/create")) == 1
    await docker_runtime.remove("bob")


async def test_fake_engine_image_missing_is_a_clear_error(
    docker_runtime: DockerRuntime, fake_engine: tuple[FakeDockerEngine, str]
) -> None:
    fake_engine[0].pullable = False
    with pytest.raises(AgentRuntimeError, match=r"image 'no/such:1' is missing"):
        await docker_runtime.ensure(InstanceSpec(name="carol", image="no/such:1"))


async def test_fake_engine_foreign_container_is_not_touched(
    docker_runtime: DockerRuntime, fake_engine: tuple[FakeDockerEngine, str]
) -> None:
    engine = fake_engine[0]
    engine.containers["dave"] = {
        "Id": "x",
        "Name": "/dave",
        "Config": {"Tty": False, "Labels": {}},
        "State": {"Status": "running", "Running": True},
    }
    with pytest.raises(AgentRuntimeError, match="did not create it"):
        await docker_runtime.remove("dave")
    assert "dave" in engine.containers


async def jwt_of(user_id: str) -> str:
    """The token issuer as the platform hands it to runtimes (async: it reads the owner)."""
    return f"jwt-of-{user_id}"


async def test_fake_engine_container_gets_the_owners_token_and_credential_key(
    fake_engine: tuple[FakeDockerEngine, str], tmp_path: Path
) -> None:
    runtime = build_docker(
        {"url": fake_engine[1]},
        RuntimeContext(
            tmp_path,
            "ws://api:3000/ws",
            jwt_of,
            lambda name: f"key-of-{name}",
        ),
    )
    await runtime.start()
    try:
        # an agent's environment cannot redirect the token or replace it
        hostile = {"api_ws_url": "ws://evil.example:1/ws", "jwt": "stolen", "TZ": "UTC"}
        await runtime.ensure(InstanceSpec(name="erin", owner_id="u5", env=hostile))
        await runtime.ensure(InstanceSpec(name="nobody"))  # no owner: no token
        await runtime.remove("erin")
        await runtime.remove("nobody")
    finally:
        await runtime.stop()
    [(_, erin), (_, nobody)] = fake_engine[0].calls("POST", "/containers/create")
    assert "jwt=jwt-of-u5" in erin["Env"]
    assert "nodered_credential_secret=key-of-erin" in erin["Env"]
    assert "api_ws_url=ws://api:3000/ws" in erin["Env"] and "TZ=UTC" in erin["Env"]
    assert not [line for line in erin["Env"] if "evil" in line or "stolen" in line]
    assert not [line for line in nobody["Env"] if line.startswith(("jwt=", "nodered_cred"))]


def test_bad_options_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agents\.memory_mb"):
        build_docker({"memory_mb": "1G"}, RuntimeContext(tmp_path))
