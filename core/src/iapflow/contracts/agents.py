"""The agent runtime interface: where and how Node-RED instances (agents) live.

A runtime is a backend chosen by ``[agents] runtime = "..."`` and registered by a plugin through
the ``register_agent_runtimes`` hook. ``factory(options, context)`` returns an
:class:`AgentRuntime`. The core only knows this interface; the ``process``, ``docker`` and
``stub`` runtimes live in the ``iapflow-nodered`` plugin, and the contract suite every runtime
passes is :mod:`iapflow.testing.agent_runtime_contract`.

Every method is keyed by the instance name, idempotent where that makes sense, and raises
:class:`AgentRuntimeError` with a sentence a user can act on (Node.js missing, port busy...).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from iapflow.errors import ApiError

# States an instance can be in, as status() reports them.
STATES = ("absent", "installing", "starting", "running", "stopping", "stopped", "crashed")


class AgentRuntimeError(ApiError):
    """A runtime could not do what was asked; the message says why and what to do."""


class InstanceNotFound(AgentRuntimeError):
    """No instance with that name exists in the runtime."""


def instance_name(username: str) -> str:
    """OpenFlow's instance name for a user: the username lower-cased, reduced to ``[a-z0-9]``."""
    name = re.sub(r"[^a-z0-9]", "", username.lower())
    if not name:
        raise AgentRuntimeError(f"username {username!r} gives an empty instance name")
    return name


@dataclass
class InstanceSpec:
    """What an instance should be. ``name`` is its key in the runtime."""

    name: str
    owner_id: str = ""
    owner_name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    memory_mb: int | None = None
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the instance must run on (Kubernetes); other runtimes ignore it."""


@dataclass
class InstanceStatus:
    """What an instance is now. ``url`` is where its editor answers, once it runs."""

    name: str
    state: str
    owner_id: str = ""
    url: str = ""
    port: int | None = None
    pid: int | None = None
    restarts: int = 0
    reason: str = ""
    started: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form replies carry."""
        result = {
            "name": self.name,
            "state": self.state,
            "owner": self.owner_id,
            "url": self.url,
            "port": self.port,
            "pid": self.pid,
            "restarts": self.restarts,
            "reason": self.reason,
            "started": self.started,
            # OpenFlow's UI reads a pod-like shape: metadata.name and status.phase.
            "metadata": {"name": self.name, "labels": {"userid": self.owner_id}},
            "status": {"phase": self.state},
        }
        result.update(self.extra)
        return result


@dataclass
class RuntimeContext:
    """What the platform hands a runtime factory: the data directory, the server's URL,
    ``issue_token(user_id)``, which returns a long-lived token for that user (OpenFlow gives
    each Node-RED instance one for its owner in the ``jwt`` environment variable), and
    ``instance_secret(name)``, a key for the instance derived from the server's secret: the
    same on every replica and for a re-created instance of that name (Node-RED encrypts its
    credentials with it)."""

    data_dir: Path
    api_ws_url: str = ""
    issue_token: Callable[[str], Awaitable[str]] | None = None
    instance_secret: Callable[[str], str] | None = None
    owner_is_admin: Callable[[str], Awaitable[bool]] | None = None
    """Whether a user is root or in ``admins`` (runtimes trust admins' instances more)."""

    async def owner_env(self, spec: InstanceSpec) -> dict[str, str]:
        """What an instance needs to reach this server as its owner: ``jwt``, a fresh
        long-lived token, and ``nodered_credential_secret``, its credential key. Empty for an
        instance without an owner, or when the platform issues no tokens (a runtime on its own).

        The token ends when the owner's password changes or the owner is disabled; starting
        the instance again gives it a new one."""
        if self.issue_token is None or not spec.owner_id:
            return {}
        env = {"jwt": await self.issue_token(spec.owner_id)}
        if self.instance_secret is not None:
            env["nodered_credential_secret"] = self.instance_secret(spec.name)
        return env


RuntimeFactory = Callable[[Mapping[str, Any], RuntimeContext], "AgentRuntime"]
"""What ``register_agent_runtimes`` registers: ``factory(options, context)`` returns an
unstarted runtime; ``options`` are the ``[agents]`` keys besides ``runtime``."""


@runtime_checkable
class AgentRuntime(Protocol):
    """A place where agent instances run. All methods are ``async``."""

    name: str

    async def start(self) -> None:
        """Open clients, load bookkeeping and adopt instances left by an earlier server."""

    async def stop(self) -> None:
        """Stop supervising; running instances are left running, to be adopted next time."""

    async def ensure(self, spec: InstanceSpec) -> InstanceStatus:
        """Create the instance if needed and start it; return at once (``starting``)."""

    async def start_instance(self, name: str) -> InstanceStatus:
        """Start a stopped instance from its last spec."""

    async def stop_instance(self, name: str) -> InstanceStatus:
        """Stop an instance, keeping its data, port and spec."""

    async def restart(self, name: str) -> InstanceStatus:
        """Stop and start an instance."""

    async def remove(self, name: str) -> bool:
        """Stop an instance and delete everything it had; False if there was nothing."""

    async def status(self, name: str) -> InstanceStatus:
        """The instance's state (``absent`` when it does not exist)."""

    async def list(self) -> list[InstanceStatus]:
        """Every instance this runtime manages."""

    async def wait_ready(self, name: str, within: float = 60.0) -> InstanceStatus:
        """Wait until the editor answers; raise :class:`AgentRuntimeError` on crash or timeout."""

    async def logs(self, name: str, lines: int = 50) -> str:
        """The last ``lines`` lines the instance logged."""

    async def node_labels(self) -> dict[str, dict[str, str]] | None:
        """Labels per cluster node (Kubernetes), or None where there are no nodes."""


async def poll_until_ready(
    runtime: AgentRuntime, name: str, within: float, interval: float
) -> InstanceStatus:
    """``wait_ready`` for runtimes that learn readiness by asking ``status`` every ``interval``
    seconds: the running status, or :class:`AgentRuntimeError` once the instance crashed,
    stopped or vanished, or ``within`` seconds passed."""
    deadline = time.monotonic() + within
    while True:
        status = await runtime.status(name)
        if status.state == "running":
            return status
        if status.state in ("crashed", "absent", "stopped"):
            raise AgentRuntimeError(f"instance {name!r} is {status.state}: {status.reason}")
        if time.monotonic() > deadline:
            raise AgentRuntimeError(f"instance {name!r} was not ready within {within:g} s")
        await asyncio.sleep(interval)


# -- shaping: what a runtime knows, as statuses and replies ------------------------------------


def absent(name: str) -> InstanceStatus:
    """The status of an instance the runtime does not have."""
    return InstanceStatus(name=name, state="absent")


def mapped(name: str, native: str, states: Mapping[str, str], **fields: Any) -> InstanceStatus:
    """A status whose state is the runtime's own state name ``native`` looked up in ``states``
    (``unknown`` when the table lacks it); ``fields`` are the other :class:`InstanceStatus`
    fields."""
    return InstanceStatus(name=name, state=states.get(native, "unknown"), **fields)


async def statuses(runtime: AgentRuntime, names: Iterable[str]) -> list[InstanceStatus]:
    """The status of each distinct name, in order, leaving out the ones that vanished meanwhile
    (a list is not an error when an instance is deleted while it is built)."""
    result = []
    for name in dict.fromkeys(names):
        status = await runtime.status(name)
        if status.state != "absent":
            result.append(status)
    return result


@runtime_checkable
class PodRuntime(Protocol):
    """A runtime whose instances have pods of their own (Kubernetes)."""

    async def pods(self, name: str) -> list[InstanceStatus]:
        """One status per pod of the instance (``name`` is the pod's name); empty if none."""

    async def delete_pod(self, name: str, pod: str) -> None:
        """Delete pod ``pod`` of instance ``name``; the runtime starts a new one."""


async def pods_of(runtime: AgentRuntime, name: str) -> list[InstanceStatus]:
    """The instance's pods: the runtime's own, or the instance itself as its only pod."""
    if isinstance(runtime, PodRuntime):
        return await runtime.pods(name)
    status = await runtime.status(name)
    return [] if status.state == "absent" else [status]


async def delete_pod(runtime: AgentRuntime, name: str, pod: str) -> InstanceStatus:
    """Delete one pod of the instance and return the instance's status. Where instances have
    no pods of their own the only pod is the instance, and deleting it restarts it."""
    if isinstance(runtime, PodRuntime):
        await runtime.delete_pod(name, pod)
        return await runtime.status(name)
    if pod != name:
        raise ApiError(f"instance {name!r} has no pod {pod!r}")
    return await runtime.restart(name)


def as_results(pods: list[InstanceStatus]) -> list[dict[str, Any]]:
    """The ``results`` of a pod listing reply (OpenFlow's pod-like shape per pod)."""
    return [pod.as_dict() for pod in pods]


__all__ = [
    "STATES",
    "AgentRuntime",
    "AgentRuntimeError",
    "InstanceNotFound",
    "InstanceSpec",
    "InstanceStatus",
    "PodRuntime",
    "RuntimeContext",
    "absent",
    "as_results",
    "delete_pod",
    "instance_name",
    "mapped",
    "pods_of",
    "poll_until_ready",
    "statuses",
]
