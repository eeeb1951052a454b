"""OpenFlow 1.5's agent commands on the ``agents`` collection, on the configured runtime.

An agent document (``_type: agent``) names its instance with ``slug`` and its image with
``image``; ``environment`` is added to the instance's env. Every command takes ``agentid`` (or
``id``) and needs Invoke right on that document; ``deleteagent`` also needs Delete. An agent
without ``image`` runs elsewhere (a daemon that registered itself), so there is nothing to
start, stop or delete: those commands do nothing for it, as in OpenFlow. All but
``getagentpods`` are audited (``_type: nodered``).
"""

from __future__ import annotations

from typing import Any

from iapflow import audit
from iapflow.agents import InstanceSpec, instance_name
from iapflow.dispatch import Request
from iapflow.errors import AccessDenied, ApiError
from iapflow.security.acl import DELETE, INVOKE, has_right
from iapflow_nodered.commands import node_selector, runtime_of
from iapflow_nodered.shaping import as_results, delete_pod, pods_of

COLLECTION = "agents"


async def _agent(request: Request, rights: int = INVOKE) -> dict[str, Any]:
    agent_id = request.data.get("agentid") or request.data.get("id")
    if not isinstance(agent_id, str) or not agent_id:
        raise ApiError("agentid is required")
    doc = await request.platform.data.get(request.user, COLLECTION, agent_id)
    if doc is None or doc.get("_type") != "agent":
        raise ApiError(f"agent {agent_id} not found")
    if not has_right(request.user, doc, rights):
        raise AccessDenied(f"{request.command}: you need invoke right on agent {agent_id}")
    return doc


def _name(agent: dict[str, Any]) -> str:
    return instance_name(str(agent.get("slug") or agent.get("name") or ""))


def _spec(agent: dict[str, Any]) -> InstanceSpec:
    env = agent.get("environment") if isinstance(agent.get("environment"), dict) else {}
    assert isinstance(env, dict)
    owner = str(agent.get("runas") or agent.get("_createdbyid") or "")
    return InstanceSpec(
        name=_name(agent),
        owner_id=owner,
        env={"agentid": str(agent["_id"]), **{str(k): str(v) for k, v in env.items()}},
        image=str(agent.get("image") or ""),
        labels={"agentid": str(agent["_id"])},
        node_selector=node_selector(agent.get("nodeselector")),
    )


async def _audit(request: Request, action: str, agent: dict[str, Any]) -> None:
    await audit.record_action(
        request.platform,
        request.user,
        "nodered",
        action,
        instancename=_name(agent),
        agentid=str(agent["_id"]),
        runtime=runtime_of(request).name,
    )


async def startagent(request: Request) -> dict[str, Any]:
    """Create the agent's instance if needed and start it."""
    runtime = runtime_of(request)
    agent = await _agent(request)
    if not agent.get("image"):
        return {"result": None}
    status = await runtime.ensure(_spec(agent))
    await _audit(request, "startagent", agent)
    return {"result": status.as_dict()}


async def stopagent(request: Request) -> dict[str, Any]:
    """Stop the agent's instance."""
    runtime = runtime_of(request)
    agent = await _agent(request)
    if not agent.get("image") or (await runtime.status(_name(agent))).state == "absent":
        return {"result": None}
    status = await runtime.stop_instance(_name(agent))
    await _audit(request, "stopagent", agent)
    return {"result": status.as_dict()}


async def getagentpods(request: Request) -> dict[str, Any]:
    """The agent's instance as a list of pods (empty when it does not run here)."""
    runtime = runtime_of(request)
    agent = await _agent(request)
    return {"results": as_results(await pods_of(runtime, _name(agent)))}


async def getagentlog(request: Request) -> dict[str, Any]:
    """The last lines the agent's instance logged."""
    runtime = runtime_of(request)
    agent = await _agent(request)
    if (await runtime.status(_name(agent))).state == "absent":
        return {"result": ""}
    text = await runtime.logs(_name(agent), 50)
    await _audit(request, "getagentlog", agent)
    return {"result": text}


async def deleteagentpod(request: Request) -> dict[str, Any]:
    """Delete the agent's pod (``podname``, default all of them): outside Kubernetes, restart
    its instance."""
    runtime = runtime_of(request)
    agent = await _agent(request)
    if (await runtime.status(_name(agent))).state == "absent":
        return {"result": None}
    pod = request.data.get("podname") or _name(agent)
    if not isinstance(pod, str):
        raise ApiError("podname must be a pod name (see getagentpods)")
    status = await delete_pod(runtime, _name(agent), pod)
    await _audit(request, "deleteagentpod", agent)
    return {"result": status.as_dict()}


async def deleteagent(request: Request) -> dict[str, Any]:
    """Remove the agent's instance and delete the agent document (Invoke and Delete)."""
    runtime = runtime_of(request)
    agent = await _agent(request, INVOKE | DELETE)
    removed = await runtime.remove(_name(agent))
    await request.platform.data.delete_one(request.user, COLLECTION, str(agent["_id"]))
    await _audit(request, "deleteagent", agent)
    return {"result": removed}


COMMANDS = {
    "startagent": startagent,
    "stopagent": stopagent,
    "getagentpods": getagentpods,
    "getagentlog": getagentlog,
    "deleteagentpod": deleteagentpod,
    "deleteagent": deleteagent,
}
