"""The admin commands: ``housekeeping``, indexes, ``customcommand``.

``customcommand`` runs the sub-command named by ``command``. The core's own sub-commands
(``getclients``, ``killwebsocketclient``, ``clearcache``) are admin-only; plugins add more
through the ``register_customcommands`` hook, and those check rights themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iapflow.builtin.admin import housekeeping as housekeeping_pass
from iapflow.dispatch import CustomHandler, Request
from iapflow.errors import AccessDenied, ApiError
from iapflow.registry import Registry
from iapflow.secure import audit
from iapflow.stash import StashKey
from iapflow.wire import as_object, collection_name

if TYPE_CHECKING:
    from iapflow.platform import Platform

INDEX_OPTIONS = frozenset(
    {
        "name",
        "unique",
        "sparse",
        "expireAfterSeconds",
        "partialFilterExpression",
        "collation",
        "hidden",
    }
)


def _admin(request: Request) -> None:
    if not request.user.is_admin:
        raise AccessDenied(f"{request.command} is for admins only")


async def housekeeping(request: Request) -> dict[str, Any]:
    """Run housekeeping now (admins; OpenFlow lets anyone)."""
    _admin(request)
    return {"result": await housekeeping_pass.run(request.platform)}


def _index_keys(value: Any) -> list[tuple[str, int | str]]:
    keys = as_object(value, "index", allow_none=False) or {}
    parsed: list[tuple[str, int | str]] = []
    for field, direction in keys.items():
        if not field or field.startswith("$"):
            raise ApiError(f"index: {field!r} is not a field name")
        if direction not in (1, -1, "2dsphere", "hashed"):
            raise ApiError(f'index {field!r}: direction must be 1, -1, "2dsphere" or "hashed"')
        parsed.append((field, direction))
    if not parsed:
        raise ApiError('index needs at least one field, like {"name": 1}')
    return parsed


async def createindex(request: Request) -> dict[str, Any]:
    """Create an index (admins): ``collectionname``, ``index`` keys, ``options``, ``name``."""
    _admin(request)
    collection = collection_name(request.data.get("collectionname"))
    options = as_object(request.data.get("options"), "options") or {}
    unknown = set(options) - INDEX_OPTIONS
    if unknown:
        known = ", ".join(sorted(INDEX_OPTIONS))
        raise ApiError(f"unknown index option {sorted(unknown)[0]!r}; known: {known}")
    if request.data.get("name"):
        options["name"] = str(request.data["name"])
    unique = bool(options.pop("unique", False))
    sparse = bool(options.pop("sparse", False))
    name = await request.platform.data.create_index(
        request.user,
        collection,
        _index_keys(request.data.get("index")),
        unique=unique,
        sparse=sparse,
        options=options,
    )
    await audit.record_action(
        request.platform,
        request.user,
        "collection",
        f"createindex {collection}.{name}",
        action="createindex",
        collection=collection,
        index=name,
    )
    return {"result": name}


async def dropindex(request: Request) -> dict[str, Any]:
    """Drop an index by ``name`` (admins)."""
    _admin(request)
    collection = collection_name(request.data.get("collectionname"))
    name = request.data.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError("dropindex needs name: the index name (see getindexes)")
    await request.platform.data.drop_index(request.user, collection, name)
    await audit.record_action(
        request.platform,
        request.user,
        "collection",
        f"dropindex {collection}.{name}",
        action="dropindex",
        collection=collection,
        index=name,
    )
    return {}


async def getindexes(request: Request) -> dict[str, Any]:
    """The indexes of a collection (admins)."""
    _admin(request)
    collection = collection_name(request.data.get("collectionname"))
    return {"results": await request.platform.data.list_indexes(request.user, collection)}


async def _getclients(request: Request) -> Any:
    return [session.describe() for session in request.platform.sessions.values()]


async def _killwebsocketclient(request: Request) -> Any:
    target = request.data.get("id")
    session = request.platform.sessions.get(target) if isinstance(target, str) else None
    if session is None:
        raise ApiError(f"no connected client with id {target!r} (see getclients)")
    await session.close(1008, "disconnected by an admin")
    await audit.record_action(
        request.platform, request.user, "killwebsocketclient", f"kill {target}", clientid=target
    )
    return True


async def _clearcache(request: Request) -> Any:
    request.platform.auth.roles.invalidate()
    return True


SUBCOMMANDS = {
    "getclients": _getclients,
    "killwebsocketclient": _killwebsocketclient,
    "clearcache": _clearcache,
}
SUBCOMMANDS_KEY = StashKey[Registry[CustomHandler]]("customcommand sub-commands")


def admin_only(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def checked(request: Request) -> Any:
        _admin(request)
        return await handler(request)

    checked.__doc__ = handler.__doc__
    return checked


def subcommands(platform: Platform) -> Registry[CustomHandler]:
    """The ``customcommand`` sub-commands of every plugin, collected once per platform."""
    registry = platform.stash.get(SUBCOMMANDS_KEY)
    if registry is None:
        registry = platform.stash.setdefault(SUBCOMMANDS_KEY, platform.plugins.customcommands())
    return registry


async def customcommand(request: Request) -> dict[str, Any]:
    """The sub-command named by ``command``: the core's admin ones (getclients,
    killwebsocketclient, clearcache) and those plugins add."""
    registry = subcommands(request.platform)
    name = request.data.get("command")
    handler = registry.get(name) if isinstance(name, str) else None
    if handler is None:
        known = ", ".join(registry.names())
        raise ApiError(f"unknown customcommand {name!r}; known: {known}")
    return {"result": await handler(request)}
