"""The plugin entry point: agent runtimes ``process``, ``docker``, ``kubernetes`` and ``stub``,
the Node-RED and agent commands, and ``customcommand registeragent``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iapflow import hookimpl
from iapflow_nodered.agents_commands import COMMANDS as AGENT_COMMANDS
from iapflow_nodered.agents_commands import CUSTOMCOMMANDS
from iapflow_nodered.commands import COMMANDS
from iapflow_nodered.docker import build_docker
from iapflow_nodered.kubernetes import build_kubernetes
from iapflow_nodered.process import build_process
from iapflow_nodered.stub import build_stub


@hookimpl
def register_agent_runtimes(register: Callable[[str, Any], None]) -> None:
    """Provide runtimes ``process`` (Node-RED from npm as local processes), ``docker``
    (containers through aiodocker), ``kubernetes`` (deployments through kubernetes-asyncio, an
    optional extra) and ``stub``."""
    register("process", build_process)
    register("docker", build_docker)
    register("kubernetes", build_kubernetes)
    register("stub", build_stub)


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """Provide the per-user Node-RED commands (``ensurenoderedinstance``...) and the agent
    commands (``startagent``...)."""
    for name, handler in {**COMMANDS, **AGENT_COMMANDS}.items():
        register(name, handler)


@hookimpl
def register_customcommands(register: Callable[[str, Any], None]) -> None:
    """Provide ``customcommand registeragent`` (agents registering themselves)."""
    for name, handler in CUSTOMCOMMANDS.items():
        register(name, handler)
