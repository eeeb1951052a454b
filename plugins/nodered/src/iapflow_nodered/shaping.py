"""How runtimes and commands shape what a runtime knows into :class:`InstanceStatus` and replies.

The runtimes build their statuses with :func:`absent`, :func:`mapped` and :func:`statuses`
(``process`` lists its instances straight from memory); the 1.4 and 1.5 commands list
and delete pods through :func:`pods_of` and :func:`delete_pod`, which use a runtime's own pods
where it has them (:class:`PodRuntime`, Kubernetes) and treat the instance as its one pod
elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from iapflow.agents import AgentRuntime, InstanceStatus
from iapflow.errors import ApiError


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
