"""OpenFlow 1.5's agent commands on the ``agents`` collection, on the configured runtime.

An agent document (``_type: agent``) names its instance with ``slug`` and its image with
``image``; ``environment`` is added to the instance's env. Every command takes ``agentid`` (or
``id``) and needs Invoke right on that document; ``deleteagent`` also needs Delete. An agent
without ``image`` runs elsewhere (a daemon that registered itself), so there is nothing to
start, stop or delete: those commands do nothing for it, as in OpenFlow. All but
``getagentpods`` are audited (``_type: nodered``).

``customcommand registeragent`` is how an agent (a daemon, an assistant, a robot) puts itself
in the ``agents`` collection, with OpenFlow 1.5's rules: see :func:`registeragent`.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any

from iapflow.builtin.agents.nodered import (
    node_selector,
    not_someone_elses,
    users_instance,
)
from iapflow.builtin.agents.runtime import runtime_of
from iapflow.contracts.agents import InstanceSpec, as_results, delete_pod, instance_name, pods_of
from iapflow.dispatch import Request
from iapflow.errors import AccessDenied, ApiError
from iapflow.jsonutil import utcnow
from iapflow.secure import audit
from iapflow.secure.acl import DELETE, INVOKE, UPDATE, has_right

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


def _slug_error(slug: str) -> str | None:
    """Why ``slug`` cannot name an instance (a DNS label for docker and kubernetes), or None."""
    if 0 < len(re.sub(r"[^a-z0-9]", "", slug.lower())) <= 63:
        return None
    return (
        f"slug {slug[:70]!r} must give an instance name of 1 to 63 letters and digits "
        "(a DNS label for docker and kubernetes)"
    )


def _name(agent: dict[str, Any]) -> str:
    slug = str(agent.get("slug") or agent.get("name") or "")
    error = _slug_error(slug)
    if error:
        raise ApiError(f"agent {agent.get('_id')}: {error}; give it another slug")
    return instance_name(slug)


async def _owner(request: Request, agent: dict[str, Any]) -> str:
    """Who the agent's instance runs as (and gets a token for): ``runas``, else the creator.

    ``runas`` is a field anyone who may edit the document can set, so a ``runas`` that is
    neither the caller nor the creator needs Invoke right on that user, as registeragent asks.
    """
    creator = str(agent.get("_createdbyid") or "")
    owner = str(agent.get("runas") or creator)
    if owner not in (creator, request.user.id):
        await _runas_user(request, owner)
    return owner


async def _instance(request: Request, agent: dict[str, Any]) -> tuple[str, str]:
    """The agent's instance name and owner. Names are slugs reduced to ``[a-z0-9]``, so a slug
    can name someone else's instance (a user's Node-RED, another agent): refused."""
    name = _name(agent)
    owner = await _owner(request, agent)
    await not_yours_to_take(request, name, owner)
    await not_someone_elses(
        request, runtime_of(request.platform), name, owner, "give this agent another slug"
    )
    return name, owner


async def not_yours_to_take(request: Request, name: str, owner: str) -> None:
    """An agent's slug may not give the instance name of another user's own Node-RED."""
    username = await users_instance(request, name, owner)
    if username is not None:
        raise AccessDenied(
            f"{request.command}: the slug gives instance name {name}, which is user "
            f"{username}'s own Node-RED; give this agent another slug"
        )


def _spec(agent: dict[str, Any], owner: str) -> InstanceSpec:
    env = agent.get("environment") if isinstance(agent.get("environment"), dict) else {}
    assert isinstance(env, dict)
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
        runtime=runtime_of(request.platform).name,
    )


async def startagent(request: Request) -> dict[str, Any]:
    """Create the agent's instance if needed and start it."""
    runtime = runtime_of(request.platform)
    agent = await _agent(request)
    if not agent.get("image"):
        return {"result": None}
    _, owner = await _instance(request, agent)
    status = await runtime.ensure(_spec(agent, owner))
    await _audit(request, "startagent", agent)
    return {"result": status.as_dict()}


async def stopagent(request: Request) -> dict[str, Any]:
    """Stop the agent's instance."""
    runtime = runtime_of(request.platform)
    agent = await _agent(request)
    if not agent.get("image"):
        return {"result": None}
    name, _ = await _instance(request, agent)
    if (await runtime.status(name)).state == "absent":
        return {"result": None}
    status = await runtime.stop_instance(name)
    await _audit(request, "stopagent", agent)
    return {"result": status.as_dict()}


async def getagentpods(request: Request) -> dict[str, Any]:
    """The agent's instance as a list of pods (empty when it does not run here)."""
    runtime = runtime_of(request.platform)
    agent = await _agent(request)
    name, _ = await _instance(request, agent)
    return {"results": as_results(await pods_of(runtime, name))}


async def getagentlog(request: Request) -> dict[str, Any]:
    """The last lines the agent's instance logged."""
    runtime = runtime_of(request.platform)
    agent = await _agent(request)
    name, _ = await _instance(request, agent)
    if (await runtime.status(name)).state == "absent":
        return {"result": ""}
    text = await runtime.logs(name, 50)
    await _audit(request, "getagentlog", agent)
    return {"result": text}


async def deleteagentpod(request: Request) -> dict[str, Any]:
    """Delete the agent's pod (``podname``, default all of them): outside Kubernetes, restart
    its instance."""
    runtime = runtime_of(request.platform)
    agent = await _agent(request)
    name, _ = await _instance(request, agent)
    if (await runtime.status(name)).state == "absent":
        return {"result": None}
    pod = request.data.get("podname") or name
    if not isinstance(pod, str):
        raise ApiError("podname must be a pod name (see getagentpods)")
    status = await delete_pod(runtime, name, pod)
    await _audit(request, "deleteagentpod", agent)
    return {"result": status.as_dict()}


async def deleteagent(request: Request) -> dict[str, Any]:
    """Remove the agent's instance and delete the agent document (Invoke and Delete)."""
    runtime = runtime_of(request.platform)
    agent = await _agent(request, INVOKE | DELETE)
    name, _ = await _instance(request, agent)
    removed = await runtime.remove(name)
    await request.platform.data.delete_one(request.user, COLLECTION, str(agent["_id"]))
    await _audit(request, "deleteagent", agent)
    return {"result": removed}


# What a registering agent may change on an agent that exists already (OpenFlow's list): what
# it can tell about the machine it runs on. Image, environment, runas and ACL stay.
REPORTED = (
    "hostname",
    "os",
    "arch",
    "username",
    "version",
    "chrome",
    "chromium",
    "docker",
    "assistant",
    "daemon",
    "languages",
)
_SLUG_ALPHABET = string.ascii_lowercase + string.digits


def _registration(request: Request) -> dict[str, Any]:
    data = request.data.get("data")
    if isinstance(data, str) and data.strip():
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ApiError(f"registeragent: data is not JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ApiError("registeragent needs data: the agent (hostname, username, os, ...)")
    # system fields and ACLs are the server's; a token is never stored
    agent = {k: v for k, v in data.items() if not str(k).startswith("_") and k != "jwt"}
    agent_id = request.data.get("id") or data.get("_id")
    if agent_id not in (None, ""):
        if not isinstance(agent_id, str):
            raise ApiError("registeragent: id must be the agent's _id")
        agent["_id"] = agent_id
    for key in ("hostname", "username", "name", "slug", "runas"):
        if agent.get(key) is not None and not isinstance(agent[key], str):
            raise ApiError(f"registeragent: {key} must be a string")
    # what the machine reports is plain values (languages a list of them), never an object
    # that could carry query operators into the stored document
    for key in REPORTED:
        value = agent.get(key)
        values = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, str | int | float | bool) for v in values):
            raise ApiError(f"registeragent: {key} must be a string, number, true/false or a list")
    error = _slug_error(agent["slug"]) if agent.get("slug") is not None else None
    if error:
        raise ApiError(f"registeragent: {error}")
    return agent


async def _runas_user(request: Request, runas: Any) -> dict[str, Any]:
    """The user the agent runs as: the caller, or another user the caller has Invoke right on."""
    user = request.user
    if not runas or runas == user.id:
        return {"_id": user.id, "name": user.name}
    found = await request.platform.data.get(user, "users", str(runas))
    if found is None:
        raise AccessDenied(f"registeragent: access denied to runas user {runas}")
    if not has_right(user, found, INVOKE):
        raise AccessDenied(
            f"registeragent: you need invoke right on user {found.get('name') or runas} "
            "to register an agent that runs as them"
        )
    return found


async def registeragent(request: Request) -> dict[str, Any]:
    """``customcommand registeragent``: insert or update the calling agent's document.

    ``data`` (an object, or a JSON string as OpenFlow clients send it) describes the agent;
    ``id`` names an existing agent. Without an id, an agent the caller can read with the same
    ``hostname`` and ``username`` is updated (a restarted agent finds itself). An existing agent
    needs Update right, and only what the machine reports (:data:`REPORTED`) and ``lastseen``
    change; an id that exists but is not the caller's to see is refused. A new agent gets a
    random ``slug`` unless it has one, ``name`` "<hostname> / <username>", and runs as
    ``runas`` (default: the caller); running as another user needs Invoke right on that user,
    and then the reply carries a long-lived ``jwt`` for that user. Audited as
    ``registeragent``.
    """
    user = request.user
    data = request.platform.data
    agent = _registration(request)
    agent["_type"] = "agent"
    agent["lastseen"] = utcnow()
    existing: dict[str, Any] | None = None
    if "_id" in agent:
        existing = await data.get(user, COLLECTION, agent["_id"])
        if existing is None and await data.service.find_one(COLLECTION, {"_id": agent["_id"]}):
            raise AccessDenied(f"registeragent: you cannot update agent {agent['_id']}")
    if existing is None and agent.get("hostname") is not None:
        same_machine = {
            "_type": "agent",
            "hostname": agent.get("hostname"),
            "username": agent.get("username"),
        }
        found = await data.query(user, COLLECTION, same_machine, top=1)
        existing = found[0] if found else None
    if existing is not None and existing.get("_type") != "agent":
        raise ApiError(f"registeragent: {existing['_id']} is not an agent")
    if existing is not None and not has_right(user, existing, UPDATE):
        raise AccessDenied(
            f"registeragent: you need update right on agent "
            f"{existing.get('name') or existing['_id']}"
        )
    runas = await _runas_user(request, (existing or agent).get("runas"))
    fields = {"runas": str(runas["_id"]), "runasname": str(runas.get("name") or "")}
    if existing is None:
        agent.setdefault("slug", "".join(secrets.choice(_SLUG_ALPHABET) for _ in range(26)))
        await not_yours_to_take(request, instance_name(agent["slug"]), str(runas["_id"]))
        if not agent.get("name"):
            agent["name"] = f"{agent.get('hostname')} / {agent.get('username')}"
        saved = await data.insert_one(user, COLLECTION, {**agent, **fields})
    else:
        reported = {k: agent[k] for k in REPORTED if agent.get(k) not in (None, "")}
        if not existing.get("name"):
            host = reported.get("hostname", existing.get("hostname"))
            who = reported.get("username", existing.get("username"))
            fields["name"] = f"{host} / {who}"
        update = {"$set": {**reported, **fields, "lastseen": agent["lastseen"]}}
        updated = await data.update_one(user, COLLECTION, {"_id": existing["_id"]}, update)
        if updated is None:
            raise AccessDenied(f"registeragent: you cannot update agent {existing['_id']}")
        saved = updated
    await audit.record_action(
        request.platform,
        user,
        "nodered",
        "registeragent",
        agentid=str(saved["_id"]),
        created=existing is None,
        runas=fields["runas"],
    )
    result = dict(saved)
    if runas["_id"] != user.id:
        result["jwt"] = request.platform.auth.tokens.issue(str(runas["_id"]), long=True)
    return result
