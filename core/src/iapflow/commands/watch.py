"""Built-in plugin: ``watch`` and ``unwatch``, and the ``watchevent`` pushes behind them.

One :class:`~iapflow.watch.hub.WatchHub` per platform is made at ``startup``; it opens the
store's change stream at the first ``watch`` (a server nobody watches does not tail the store)
and closes it at ``shutdown``. A connection's watches end when it closes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iapflow import hookimpl
from iapflow.data.query import collection_name
from iapflow.dispatch import Request
from iapflow.errors import AccessDenied, ApiError
from iapflow.watch.hub import WatchHub
from iapflow.watch.paths import parse_watch_filter

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.session import Session

# Collections only admins may watch: the server's own log, and file bytes (no ACL of their own).
ADMIN_ONLY_COLLECTIONS = frozenset({"audit"})
ADMIN_ONLY_SUFFIXES = (".chunks",)

_hubs: weakref.WeakKeyDictionary[Platform, WatchHub] = weakref.WeakKeyDictionary()


def hub_for(platform: Platform) -> WatchHub:
    """The platform's watch hub (made by this plugin's ``startup``)."""
    hub = _hubs.get(platform)
    if hub is None:
        raise ApiError("watches are not available: the server has not started them")
    return hub


def _check_collection(request: Request, name: str) -> None:
    if request.user.is_admin:
        return
    if name in ADMIN_ONLY_COLLECTIONS or name.endswith(ADMIN_ONLY_SUFFIXES):
        raise AccessDenied(f"watch: only admins can watch {name!r}")


def _connection(request: Request) -> Session:
    session = request.session
    if session is None or session.principal is None:
        raise ApiError("watch: sign the connection in first; events go to its signed-in user")
    if session.principal.id != request.user.id:
        raise ApiError(
            "watch: events go to the connection's signed-in user; "
            "the jwt in this request names another user"
        )
    return session


async def watch(request: Request) -> dict[str, Any]:
    """Watch ``collectionname``; ``paths`` (JSONPath) and ``aggregates`` (``$match``) filter."""
    name = collection_name(request.data.get("collectionname"))
    session = _connection(request)
    _check_collection(request, name)
    selection = parse_watch_filter(request.data.get("paths"), request.data.get("aggregates"))
    registered = await hub_for(request.platform).add(session, request.user, name, selection)
    return {"id": registered.id, "result": registered.id}


async def unwatch(request: Request) -> dict[str, Any]:
    """Stop one of this connection's watches."""
    watch_id = request.data.get("id")
    if not isinstance(watch_id, str) or not watch_id:
        raise ApiError("unwatch: id (the id the watch reply gave) is required")
    session = request.session
    if session is None or not hub_for(request.platform).remove(session, watch_id):
        raise ApiError(f"unwatch: this connection has no watch {watch_id[:64]!r}")
    return {}


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """Provide ``watch`` and ``unwatch``."""
    register("watch", watch)
    register("unwatch", unwatch)


@hookimpl
def startup(platform: Platform) -> None:
    """Make the platform's hub; its change stream opens at the first watch."""
    _hubs[platform] = WatchHub(platform.storage, platform.auth.roles.roles_of)


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Close the change stream and every sender."""
    hub = _hubs.pop(platform, None)
    if hub is not None:
        await hub.stop()


@hookimpl
async def on_session_closed(platform: Platform, session: Session) -> None:
    """A closed connection's watches go with it."""
    hub = _hubs.get(platform)
    if hub is not None:
        await hub.drop_session(session)
