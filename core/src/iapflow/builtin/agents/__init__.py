"""Built-in plugin: agents. The per-user Node-RED commands of OpenFlow 1.4
(:mod:`.nodered`), the agent commands of 1.5 and ``customcommand registeragent``
(:mod:`.commands`), all on the agent runtime contract; the ``[agents]`` section that chooses
the runtime (``process``, ``docker``, ``kubernetes`` from ``iapflow-nodered``); the agents page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from iapflow import hookimpl
from iapflow.builtin.agents import commands, nodered, runtime
from iapflow.builtin.agents.config import AgentsConfig
from iapflow.dispatch import CustomHandler, Proto, RegisterCommand
from iapflow.platform import Platform
from iapflow.web import RegisterUi


@hookimpl
def register_config(register: Callable[[str, type[BaseModel]], None]) -> None:
    """``[agents]``."""
    register("agents", AgentsConfig)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """The Node-RED instance commands (JSON protocol only, as in OpenFlow) and the agent
    commands."""
    for name in (
        "ensurenoderedinstance", "startnoderedinstance", "restartnoderedinstance",
        "stopnoderedinstance", "deletenoderedinstance", "deletenoderedpod",
        "getnoderedinstance", "getnoderedinstancelog", "getkubenodelabels",
    ):  # fmt: skip
        register(name, getattr(nodered, name))
    register("startagent", commands.startagent, proto=Proto("StartAgent"))
    register("stopagent", commands.stopagent, proto=Proto("StopAgent"))
    register("getagentlog", commands.getagentlog, proto=Proto("GetAgentLog"))
    register("getagentpods", commands.getagentpods, proto=Proto("GetAgentPods"))
    register("deleteagentpod", commands.deleteagentpod, proto=Proto("DeleteAgentPod"))
    register("deleteagent", commands.deleteagent, proto=Proto("DeleteAgent"))


@hookimpl
def register_customcommands(register: Callable[[str, CustomHandler], None]) -> None:
    """``customcommand registeragent`` (agents registering themselves)."""
    register("registeragent", commands.registeragent)


@hookimpl
def prepare(platform: Platform) -> None:
    """Build the configured runtime."""
    runtime.prepare(platform)


@hookimpl
async def startup(platform: Platform) -> None:
    """Start the runtime."""
    await runtime.start(platform)


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Stop supervising the instances (they keep running)."""
    await runtime.stop(platform)


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The agents page."""
    register("agents", Path(__file__).parent / "ui", ["agents.js"])
