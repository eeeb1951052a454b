"""The ``docker`` agent runtime: each Node-RED instance is a container, through aiodocker.

A container is named after the instance and carries the labels ``openiap.io/instance``,
``openiap.io/managed-by`` and ``userid``, plus traefik's routing labels
(``Host(`<name>.<domain>`)`` to port 1880) unless ``traefik`` is off. Its memory limit comes from
the user's ``nodered.resources.memory_mb`` or ``memory_mb``, its restart policy is
``unless-stopped``, so the engine restarts a crashed instance and keeps it across engine
restarts; iapflow keeps no state of its own, so a restarted server finds its containers by
label. A missing image is pulled once; if that fails the error names the image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from iapflow.contracts.agents import (
    AgentRuntimeError,
    InstanceNotFound,
    InstanceSpec,
    InstanceStatus,
    RuntimeContext,
    absent,
    mapped,
    poll_until_ready,
    statuses,
)
from iapflow.errors import ConfigError

OPTIONS: dict[str, Any] = {
    "url": "",
    "image": "nodered/node-red:4.1",
    "network": "",
    "domain": "localhost",
    "traefik": True,
    "entrypoints": "web",
    "memory_mb": 256,
    "restart_policy": "unless-stopped",
}
MANAGED_BY = "openiap.io/managed-by"
INSTANCE_LABEL = "openiap.io/instance"
NODE_RED_PORT = 1880
_STATES = {
    "created": "starting",
    "restarting": "starting",
    "running": "running",
    "paused": "stopped",
    "exited": "stopped",
    "removing": "stopping",
    "dead": "crashed",
}


class DockerRuntime:
    """Node-RED instances as Docker containers; see the module docstring."""

    name = "docker"

    def __init__(self, options: dict[str, Any], context: RuntimeContext) -> None:
        self.options = {**OPTIONS, **options}
        self.context = context
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        """The engine client (after :meth:`start`)."""
        if self._docker is None:
            raise AgentRuntimeError("the docker runtime is not started")
        return self._docker

    async def start(self) -> None:
        """Open the engine client; a server that cannot reach the engine still starts."""
        self._docker = aiodocker.Docker(url=str(self.options["url"]) or None)

    async def stop(self) -> None:
        """Close the client; containers keep running."""
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    # -- container description ----------------------------------------------------------------

    def container_config(
        self, spec: InstanceSpec, owner: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The body of ``POST /containers/create`` for ``spec``; ``owner`` is what
        ``RuntimeContext.owner_env`` gave for it."""
        name = spec.name
        labels = {
            INSTANCE_LABEL: name,
            MANAGED_BY: "iapflow",
            "userid": spec.owner_id,
            **spec.labels,
        }
        if self.options["traefik"]:
            domain = self.options["domain"]
            labels.update(
                {
                    "traefik.enable": "true",
                    f"traefik.http.routers.{name}.rule": f"Host(`{name}.{domain}`)",
                    f"traefik.http.routers.{name}.entrypoints": str(self.options["entrypoints"]),
                    f"traefik.http.services.{name}.loadbalancer.server.port": str(NODE_RED_PORT),
                }
            )
        # The runtime's own variables win over the spec's: an agent's environment (which any
        # user with update right on it may edit) must not point its owner's token elsewhere.
        env = {**spec.env, "nodered_id": name, "api_ws_url": self.context.api_ws_url}
        # the owner's token and credential key, as the process runtime and OpenFlow's docker
        # driver pass them (none for an instance without an owner)
        env.update(owner or {})
        memory = spec.memory_mb or int(self.options["memory_mb"])
        host_config: dict[str, Any] = {
            "Memory": memory * 1024 * 1024,
            "RestartPolicy": {"Name": str(self.options["restart_policy"])},
        }
        if self.options["network"]:
            host_config["NetworkMode"] = str(self.options["network"])
        return {
            "Image": spec.image or str(self.options["image"]),
            "Env": [f"{key}={value}" for key, value in sorted(env.items())],
            "Labels": labels,
            "ExposedPorts": {f"{NODE_RED_PORT}/tcp": {}},
            "HostConfig": host_config,
        }

    # -- engine calls -------------------------------------------------------------------------

    async def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            container = await self.docker.containers.get(name)
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise AgentRuntimeError(f"docker: {exc.message}") from exc
        info: dict[str, Any] = container._container
        if info.get("Config", {}).get("Labels", {}).get(MANAGED_BY) != "iapflow":
            raise AgentRuntimeError(f"container {name!r} exists but iapflow did not create it")
        return info

    async def _ensure_image(self, image: str) -> None:
        try:
            await self.docker.images.inspect(image)
            return
        except DockerError as exc:
            if exc.status != 404:
                raise AgentRuntimeError(f"docker: {exc.message}") from exc
        try:
            await self.docker.images.pull(image)
        except DockerError as exc:
            raise AgentRuntimeError(
                f"image {image!r} is missing and could not be pulled: {exc.message}"
            ) from exc

    async def _call(self, name: str, action: str) -> None:
        container = self.docker.containers.container(name)
        try:
            if action == "start":
                await container.start()
            elif action == "stop":
                await container.stop()
            else:
                await container.restart()
        except DockerError as exc:
            if exc.status == 404:
                raise InstanceNotFound(f"no Node-RED instance named {name!r}") from exc
            if exc.status != 304:  # already started / stopped
                raise AgentRuntimeError(f"docker {action} {name}: {exc.message}") from exc

    def _status(self, name: str, info: dict[str, Any] | None) -> InstanceStatus:
        if info is None:
            return absent(name)
        state = info.get("State", {})
        labels = info.get("Config", {}).get("Labels", {})
        reason = state.get("Error", "") or (
            f"exit code {state.get('ExitCode')}" if state.get("Status") == "exited" else ""
        )
        return mapped(
            name,
            state.get("Status", ""),
            _STATES,
            owner_id=labels.get("userid", ""),
            url=f"http://{name}:{NODE_RED_PORT}/",
            pid=state.get("Pid") or None,
            restarts=int(info.get("RestartCount", 0)),
            reason=reason,
            started=state.get("StartedAt", ""),
            extra={"containerid": info.get("Id", "")},
        )

    # -- the runtime interface ----------------------------------------------------------------

    async def ensure(self, spec: InstanceSpec) -> InstanceStatus:
        """Create the container if it does not exist, and start it."""
        info = await self._inspect(spec.name)
        if info is None:
            config = self.container_config(spec, await self.context.owner_env(spec))
            await self._ensure_image(config["Image"])
            try:
                await self.docker.containers.create(config, name=spec.name)
            except DockerError as exc:
                raise AgentRuntimeError(f"docker create {spec.name}: {exc.message}") from exc
        await self._call(spec.name, "start")
        return await self.status(spec.name)

    async def start_instance(self, name: str) -> InstanceStatus:
        """Start the stopped container."""
        await self._call(name, "start")
        return await self.status(name)

    async def stop_instance(self, name: str) -> InstanceStatus:
        """Stop the container; it stays, with its data."""
        await self._call(name, "stop")
        return await self.status(name)

    async def restart(self, name: str) -> InstanceStatus:
        """Restart the container."""
        await self._call(name, "restart")
        return await self.status(name)

    async def remove(self, name: str) -> bool:
        """Remove the container and its anonymous volumes, killing it if it runs."""
        if await self._inspect(name) is None:
            return False
        try:
            await self.docker.containers.container(name).delete(force=True, v=True)
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise AgentRuntimeError(f"docker remove {name}: {exc.message}") from exc
        return True

    async def status(self, name: str) -> InstanceStatus:
        """The container's state."""
        return self._status(name, await self._inspect(name))

    async def list(self) -> list[InstanceStatus]:
        """Every container labelled as managed by iapflow."""
        filters = json.dumps({"label": [f"{MANAGED_BY}=iapflow"]})
        containers = await self.docker.containers.list(all=True, filters=filters)
        names = [c._container.get("Labels", {}).get(INSTANCE_LABEL) for c in containers]
        return await statuses(self, [name for name in names if name])

    async def wait_ready(self, name: str, within: float = 60.0) -> InstanceStatus:
        """Wait until the container runs."""
        return await poll_until_ready(self, name, within, interval=0.2)

    async def logs(self, name: str, lines: int = 50) -> str:
        """The container's last ``lines`` lines of output."""
        if await self._inspect(name) is None:
            raise InstanceNotFound(f"no Node-RED instance named {name!r}")
        container = self.docker.containers.container(name)
        chunks = await container.log(stdout=True, stderr=True, tail=lines)
        return "".join(chunks).rstrip("\n")

    async def node_labels(self) -> dict[str, dict[str, str]] | None:
        """Docker has no cluster nodes."""
        return None


def build_docker(options: Mapping[str, Any], context: RuntimeContext) -> DockerRuntime:
    """The ``docker`` runtime's factory; checks option names and types."""
    for key, value in options.items():
        if key not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise ConfigError(f"agents.{key}", f"not an option of the docker runtime ({known})")
        if type(value) is not type(OPTIONS[key]):
            raise ConfigError(f"agents.{key}", f"must be {type(OPTIONS[key]).__name__}")
    return DockerRuntime(dict(options), context)
