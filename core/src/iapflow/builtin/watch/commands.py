"""``watch`` and ``unwatch``, and how they and the ``watchevent`` pushes travel in the
protobuf protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iapflow import jsonutil
from iapflow.builtin.watch.hub import WatchHub
from iapflow.builtin.watch.paths import parse_watch_filter
from iapflow.dispatch import Request
from iapflow.errors import AccessDenied, ApiError
from iapflow.stash import StashKey
from iapflow.wire import collection_name

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.session import Session

# Collections only admins may watch: the server's own log, and file bytes (no ACL of their own).
ADMIN_ONLY_COLLECTIONS = frozenset({"audit"})
ADMIN_ONLY_SUFFIXES = (".chunks",)

HUB = StashKey[WatchHub]("watch hub")


def hub_for(platform: Platform) -> WatchHub:
    """The platform's watch hub (made by this plugin's ``startup``)."""
    hub = platform.stash.get(HUB)
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


def watch_in(data: dict[str, Any]) -> dict[str, Any]:
    """The Rust client sends ``paths: [""]`` for no paths (its API takes one comma-separated
    string)."""
    paths = data.get("paths")
    if isinstance(paths, list):
        data["paths"] = [p for p in paths if not (isinstance(p, str) and not p.strip())]
    return data


def watchevent(data: dict[str, Any]) -> dict[str, Any]:
    """The ``WatchEvent`` push: the operation and the document (its id when it is gone)."""
    result = data.get("result") or {}
    document = result.get("fullDocument")
    if document is None:
        document = {"_id": (result.get("documentKey") or {}).get("_id")}
    return {
        "id": str(data.get("id") or ""),
        "operation": str(result.get("operationType") or ""),
        "document": jsonutil.dumps(document),
    }
