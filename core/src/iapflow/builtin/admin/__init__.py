"""Built-in plugin: administration. ``housekeeping`` (on demand and on a timer), the index
commands, ``customcommand`` with the core's admin sub-commands, the ``[housekeeping]`` section
and the admin pages (users, connected clients, config, plugins)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from iapflow import hookimpl
from iapflow.builtin.admin import commands, housekeeping
from iapflow.builtin.admin.config import HousekeepingConfig
from iapflow.dispatch import CustomHandler, Proto, RegisterCommand
from iapflow.platform import Platform
from iapflow.web import RegisterUi


@hookimpl
def register_config(register: Callable[[str, type[BaseModel]], None]) -> None:
    """``[housekeeping]``."""
    register("housekeeping", HousekeepingConfig)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """The admin commands."""
    register("housekeeping", commands.housekeeping)
    register("createindex", commands.createindex, proto=Proto("CreateIndex"))
    register("dropindex", commands.dropindex, proto=Proto("DropIndex"))
    register("getindexes", commands.getindexes, proto=Proto("GetIndexes"))
    register("customcommand", commands.customcommand, proto=Proto("CustomCommand"))


@hookimpl
def register_customcommands(register: Callable[[str, CustomHandler], None]) -> None:
    """The core's admin-only sub-commands."""
    for name, handler in commands.SUBCOMMANDS.items():
        register(name, commands.admin_only(handler))


@hookimpl
def startup(platform: Platform) -> None:
    """Collect the sub-commands now, so that two plugins claiming one name stop startup;
    start the housekeeping timer."""
    commands.subcommands(platform)
    housekeeping.start(platform)


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Stop the housekeeping timer."""
    await housekeeping.stop(platform)


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """Users and roles, connected clients, the config and the plugins."""
    modules = ["users.js", "user.js", "clients.js", "config.js", "plugins.js"]
    register("admin", Path(__file__).parent / "ui", modules)
