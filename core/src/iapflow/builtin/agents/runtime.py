"""The platform's agent runtime: chosen by ``[agents] runtime``, given what it needs to start
instances that reach this server as their owners, started after the broker and stopped before
it."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from iapflow import wellknown
from iapflow.builtin.agents.config import AgentsConfig
from iapflow.contracts.agents import AgentRuntime, AgentRuntimeError, RuntimeContext
from iapflow.plugins import require
from iapflow.stash import StashKey

if TYPE_CHECKING:
    from iapflow.platform import Platform

RUNTIME = StashKey[AgentRuntime]("agent runtime")
STARTED = StashKey[bool]("agent runtime started")

NO_RUNTIME = (
    'no agent runtime is configured: set [agents] runtime = "process" (Node-RED as local '
    "processes) or another installed runtime in the server config"
)


def prepare(platform: Platform) -> None:
    """Build the configured runtime (a missing plugin or a bad option fails here)."""
    config = platform.config.section(AgentsConfig)
    if not config.runtime:
        return
    factory = require(platform.plugins.agent_runtimes(), config.runtime, "agent")
    server = platform.config.server

    async def issue_token(user_id: str) -> str:
        return await platform.auth.issue_for(user_id, long=True)

    def instance_secret(name: str) -> str:
        message = b"agent-instance-secret\0" + name.encode()
        return hmac.new(platform.secret.encode(), message, hashlib.sha256).hexdigest()

    async def owner_is_admin(user_id: str) -> bool:
        roles = await platform.auth.roles.roles_of(user_id)
        return user_id == wellknown.ROOT or any(r["_id"] == wellknown.ADMINS for r in roles)

    context = RuntimeContext(
        platform.config.data_dir,
        f"ws://{server.host}:{server.port}/ws",
        issue_token,
        instance_secret,
        owner_is_admin,
    )
    platform.stash[RUNTIME] = factory(config.options(), context)
    platform.backends["agent runtime"] = config.runtime


async def start(platform: Platform) -> None:
    """Start the runtime (it adopts the instances an earlier server left running)."""
    runtime = platform.stash.get(RUNTIME)
    if runtime is not None:
        await runtime.start()
        platform.stash[STARTED] = True


async def stop(platform: Platform) -> None:
    """Stop supervising; running instances are left running, to be adopted next time."""
    runtime = platform.stash.get(RUNTIME)
    if runtime is not None and platform.stash.pop(STARTED):
        await runtime.stop()


def configured(platform: Platform) -> AgentRuntime | None:
    """The configured runtime, or ``None`` when ``[agents] runtime`` is empty."""
    return platform.stash.get(RUNTIME)


def runtime_of(platform: Platform) -> AgentRuntime:
    """The configured runtime, or an error saying how to configure one."""
    runtime = platform.stash.get(RUNTIME)
    if runtime is None:
        raise AgentRuntimeError(NO_RUNTIME)
    return runtime
