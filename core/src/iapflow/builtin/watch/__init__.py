"""Built-in plugin: watches. ``watch`` and ``unwatch``, and the ``watchevent`` pushes behind
them.

One :class:`~iapflow.builtin.watch.hub.WatchHub` per platform is made at ``startup``; it opens
the store's change stream at the first ``watch`` (a server nobody watches does not tail the
store) and closes it at ``shutdown``. A connection's watches end when it closes.
"""

from __future__ import annotations

from iapflow import hookimpl
from iapflow.builtin.watch import commands
from iapflow.builtin.watch.commands import HUB
from iapflow.builtin.watch.hub import WatchHub
from iapflow.dispatch import Proto, ProtoPush, RegisterCommand
from iapflow.platform import Platform
from iapflow.session import Session

WATCH = Proto(
    "Watch",
    to_dict=commands.watch_in,
    pushes=(("watchevent", ProtoPush("watchevent", "WatchEvent", commands.watchevent)),),
)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """``watch`` and ``unwatch``."""
    register("watch", commands.watch, proto=WATCH)
    register("unwatch", commands.unwatch, proto=Proto("UnWatch"))


@hookimpl
def prepare(platform: Platform) -> None:
    """Clients reading ``/config`` or the ``signin`` reply learn that watches work."""
    platform.public_config["supports_watch"] = True


@hookimpl
def startup(platform: Platform) -> None:
    """Make the platform's hub; its change stream opens at the first watch."""
    platform.stash[HUB] = WatchHub(platform.data.watch_changes, platform.auth.roles.roles_of)


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Close the change stream and every sender."""
    hub = platform.stash.pop(HUB)
    if hub is not None:
        await hub.stop()


@hookimpl
async def on_session_closed(platform: Platform, session: Session) -> None:
    """A closed connection's watches go with it."""
    hub = platform.stash.get(HUB)
    if hub is not None:
        await hub.drop_session(session)
