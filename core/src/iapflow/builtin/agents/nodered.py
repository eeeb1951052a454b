"""The per-user Node-RED commands of OpenFlow 1.4, on whatever agent runtime is configured.

Rights, as OpenFlow: ``ensure``/``start``/``restart`` need ``admins`` or ``personal nodered
users``; acting on another user's instance needs Update on that user's document (admins have
it). ``stop``, ``delete``, ``get``, ``log`` and ``deletenoderedpod`` need that Update right too;
a user always has it on their own user document. Every action is audited (``_type: nodered``).
"""

from __future__ import annotations

import re
from typing import Any

from iapflow import wellknown
from iapflow.builtin.agents.runtime import configured, runtime_of
from iapflow.contracts.agents import (
    AgentRuntime,
    InstanceSpec,
    as_results,
    delete_pod,
    instance_name,
    pods_of,
)
from iapflow.dispatch import Request
from iapflow.errors import AccessDenied, ApiError
from iapflow.secure import audit
from iapflow.secure.acl import UPDATE, has_right


async def _target(request: Request, needs_role: bool) -> dict[str, Any]:
    """The user document whose instance the request is about, after the rights checks."""
    user = request.user
    target_id = request.data.get("_id") or user.id
    if not isinstance(target_id, str):
        raise ApiError("_id must be a user id")
    if needs_role and not user.is_admin and wellknown.PERSONAL_NODERED_USERS not in user.ids:
        raise AccessDenied(
            f"{request.command} needs membership of 'admins' or 'personal nodered users'"
        )
    target = await request.platform.auth.principals.principal(target_id)
    if target is None or target.get("_type") != "user":
        raise ApiError(f"user {target_id} not found")
    if target_id != user.id and not has_right(user, target, UPDATE):
        raise AccessDenied(f"{request.command}: you need update right on user {target_id}")
    return target


async def _instance(
    request: Request, needs_role: bool = False
) -> tuple[AgentRuntime, dict[str, Any], str]:
    """The prelude of every command on an existing instance: the runtime, the target user
    (after the rights checks) and the instance's name."""
    runtime = runtime_of(request.platform)
    target = await _target(request, needs_role)
    name = instance_name(str(target.get("username") or ""))
    await not_someone_elses(request, runtime, name, str(target["_id"]))
    return runtime, target, name


async def not_someone_elses(
    request: Request, runtime: AgentRuntime, name: str, owner_id: str, fix: str = ""
) -> None:
    """Instance names are usernames (and agent slugs) reduced to ``[a-z0-9]``, so two owners can
    reach one name ("a.b" and "ab", an agent with that slug): only its owner may use it.
    ``fix`` is added to the refusal."""
    status = await runtime.status(name)
    if status.state != "absent" and status.owner_id and status.owner_id != owner_id:
        message = f"{request.command}: instance {name} belongs to another user or agent"
        raise AccessDenied(f"{message}; {fix}" if fix else message)


async def users_instance(request: Request, name: str, owner_id: str) -> str | None:
    """The username whose own Node-RED instance is called ``name``, when that user is not
    ``owner_id``: a user's instance name stays theirs, even before they have an instance."""
    letters = [re.escape(c) for c in name]
    gap = "[^a-z0-9]*"
    pattern = f"^{gap}{gap.join(letters)}{gap}$"
    found = await request.platform.data.service.find(
        "users",
        {"_type": "user", "username": {"$regex": pattern}},
        projection={"_id": 1, "username": 1},
        limit=5,
    )
    for user in found:
        if str(user["_id"]) != owner_id and instance_name(str(user["username"])) == name:
            return str(user["username"])
    return None


def _spec(request: Request, target: dict[str, Any]) -> InstanceSpec:
    username = str(target.get("username") or target.get("name") or "")
    settings = target.get("nodered") if isinstance(target.get("nodered"), dict) else {}
    assert isinstance(settings, dict)
    memory = None
    resources = settings.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("memory_mb"), int):
        memory = resources["memory_mb"]
    env = {"nodered_sa": username, "queue_prefix": str(settings.get("queue_prefix") or "")}
    if isinstance(settings.get("tz"), str):
        env["TZ"] = settings["tz"]
    return InstanceSpec(
        name=instance_name(username),
        owner_id=str(target["_id"]),
        owner_name=username,
        env=env,
        memory_mb=memory,
        labels={"userid": str(target["_id"])},
        node_selector=node_selector(settings.get("nodeselector")),
    )


def node_selector(value: Any) -> dict[str, str]:
    """OpenFlow's ``nodeselector`` setting (node label -> value) as a node selector; anything
    but a mapping of strings is an error, since a wrong selector leaves a pod unscheduled."""
    if value is None or value == {}:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ApiError("nodeselector must map node label names to strings")
    return dict(value)


async def _audit(request: Request, action: str, name: str, target: dict[str, Any]) -> None:
    await audit.record_action(
        request.platform,
        request.user,
        "nodered",
        action,
        instancename=name,
        targetid=str(target["_id"]),
        runtime=runtime_of(request.platform).name,
    )


async def ensurenoderedinstance(request: Request) -> dict[str, Any]:
    """Create the user's instance if needed and start it (returns while it starts)."""
    runtime = runtime_of(request.platform)
    target = await _target(request, needs_role=True)
    spec = _spec(request, target)
    await not_someone_elses(request, runtime, spec.name, spec.owner_id)
    status = await runtime.ensure(spec)
    await _audit(request, "ensureinstance", spec.name, target)
    return {"result": status.as_dict()}


async def startnoderedinstance(request: Request) -> dict[str, Any]:
    """Start the user's instance, creating it when it does not exist (as OpenFlow)."""
    return await ensurenoderedinstance(request)


async def restartnoderedinstance(request: Request) -> dict[str, Any]:
    """Stop and start the user's instance."""
    runtime, target, name = await _instance(request, needs_role=True)
    status = await runtime.restart(name)
    await _audit(request, "restartinstance", name, target)
    return {"result": status.as_dict()}


async def stopnoderedinstance(request: Request) -> dict[str, Any]:
    """Stop the user's instance, keeping its data."""
    runtime, target, name = await _instance(request)
    status = await runtime.stop_instance(name)
    await _audit(request, "stopinstance", name, target)
    return {"result": status.as_dict()}


async def deletenoderedinstance(request: Request) -> dict[str, Any]:
    """Stop the user's instance and delete it with its data."""
    runtime, target, name = await _instance(request)
    removed = await runtime.remove(name)
    await _audit(request, "deleteinstance", name, target)
    return {"result": removed}


async def deletenoderedpod(request: Request) -> dict[str, Any]:
    """Delete one pod of the instance (``instancename``, default all of them): Kubernetes starts
    a new one; a process, docker or stub instance is restarted instead."""
    runtime, target, name = await _instance(request)
    pod = request.data.get("instancename") or name
    if not isinstance(pod, str):
        raise ApiError("instancename must be a pod name (see getnoderedinstance)")
    status = await delete_pod(runtime, name, pod)
    await _audit(request, "deletepod", name, target)
    return {"result": status.as_dict()}


async def getnoderedinstance(request: Request) -> dict[str, Any]:
    """The user's instance as a list of pods (empty when it does not exist)."""
    runtime, _target_user, name = await _instance(request)
    results = as_results(await pods_of(runtime, name))
    return {"results": results, "result": results[0] if results else None}


async def getnoderedinstancelog(request: Request) -> dict[str, Any]:
    """The last lines the user's instance logged."""
    runtime, target, name = await _instance(request)
    lines = request.data.get("lines", 50)
    if not isinstance(lines, int) or not 1 <= lines <= 10000:
        raise ApiError("lines must be a number from 1 to 10000")
    text = await runtime.logs(name, lines)
    await _audit(request, "getinstancelog", name, target)
    return {"result": text}


async def getkubenodelabels(request: Request) -> dict[str, Any]:
    """Labels of the cluster's nodes (None outside Kubernetes, or with no runtime)."""
    runtime = configured(request.platform)
    return {"result": None if runtime is None else await runtime.node_labels()}
