"""Every hook an iapflow plugin can implement, grouped by concern.

Hook names follow fixed verbs: ``register_*`` hands the plugin a ``register`` callback,
``startup``/``shutdown`` bracket the server's life, ``on_*`` are notifications. A failing
``on_*`` observer is logged and never breaks a request; every other hook's errors propagate.
Implementations of ``startup``, ``shutdown`` and ``on_*`` may be ``async def``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from iapflow.platform import Platform

hookspec = pluggy.HookspecMarker("iapflow")

# ---------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def startup(platform: Platform) -> Any:
    """Called once after storage has started and built-in users and roles exist, before the
    server accepts connections.

    :param platform: the running :class:`iapflow.platform.Platform` (config, storage, data layer,
        auth, dispatcher).
    :return: nothing (or an awaitable); every implementation runs, in registration order reversed.

    .. versionadded:: 0.1
    """


@hookspec
def shutdown(platform: Platform) -> Any:
    """Called once when the server stops, after connections have closed and before storage stops.

    :param platform: the :class:`iapflow.platform.Platform` that is stopping.
    :return: nothing (or an awaitable); every implementation runs.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------


@hookspec
def register_storage(register: Callable[[str, Any], None]) -> None:
    """Called at startup to collect storage backends.

    :param register: call ``register(name, factory)`` for each backend this plugin provides;
        ``factory(options, context)`` returns an :class:`iapflow.storage.Storage`. The name is
        what ``[storage] backend = "..."`` selects. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def register_collection_rules(register: Callable[[str, Any], None]) -> None:
    """Called when the platform starts, to collect the rules a capability adds to the generic
    document commands on its collections (see :mod:`iapflow.data.rules`).

    :param register: call ``register(collection, factory)``; ``factory(platform)`` returns an
        :class:`iapflow.data.rules.CollectionRules`. Several plugins may register rules for one
        collection; all apply, the built-ins' first.
    :return: nothing.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------------------------------------
# messaging
# ---------------------------------------------------------------------------------------------


@hookspec
def register_brokers(register: Callable[[str, Any], None]) -> None:
    """Called while the platform prepares, to collect messaging backends.

    :param register: call ``register(name, factory)`` for each backend this plugin provides;
        ``factory(options, context)`` returns an :class:`iapflow.messaging.broker.Broker`
        (``options`` are the ``[messaging]`` keys besides ``backend``, ``context`` a
        :class:`iapflow.messaging.broker.BrokerContext`). The name is what
        ``[messaging] backend = "..."`` selects. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# auth
# ---------------------------------------------------------------------------------------------


@hookspec
def register_auth_providers(register: Callable[[str, Any], None]) -> None:
    """Called once while the platform prepares, to collect password sign-in providers.

    :param register: call ``register(name, provider)``; ``provider`` has
        ``async authenticate(platform, username, password) -> dict | None`` returning the stored
        user document when the credentials are right. On each password sign-in the providers
        are asked in pluggy's calling order (installed plugins before the built-in ``local``)
        until one returns a user.
    :return: nothing.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# agents
# ---------------------------------------------------------------------------------------------


@hookspec
def register_agent_runtimes(register: Callable[[str, Any], None]) -> None:
    """Called while the platform prepares, to collect agent runtimes (where Node-RED runs).

    :param register: call ``register(name, factory)`` for each runtime this plugin provides;
        ``factory(options, context)`` returns an :class:`iapflow.agents.AgentRuntime`
        (``options`` are the ``[agents]`` keys besides ``runtime``, ``context`` a
        :class:`iapflow.agents.RuntimeContext`). The name is what ``[agents] runtime = "..."``
        selects. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


@hookspec
def register_commands(register: Callable[..., None]) -> None:
    """Called at startup to collect API commands, which every transport reaches.

    :param register: call ``register(name, handler, aliases=(), signed_in=True)``;
        ``handler(request)`` is an ``async`` function taking an
        :class:`iapflow.dispatch.Request` and returning a dict of fields to add to the reply.
        With ``signed_in=False`` the command runs for anonymous connections too.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def register_customcommands(register: Callable[[str, Any], None]) -> None:
    """Called at startup to collect the sub-commands of ``customcommand`` (OpenFlow's
    ``customcommand`` with ``command: "<name>"``), next to the core's admin sub-commands.

    :param register: call ``register(name, handler)``; ``handler(request)`` is an ``async``
        function taking an :class:`iapflow.dispatch.Request` (``request.data`` holds the
        ``customcommand`` fields: ``command``, ``id``, ``name``, ``data``) and returning the
        reply's ``result``. It checks the caller's rights itself; only the core's own
        sub-commands are admin-only. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# web
# ---------------------------------------------------------------------------------------------


@hookspec
def register_routes(register: Callable[[Any], None]) -> None:
    """Called when the web app is built, to add HTTP or websocket routes.

    :param register: call ``register(route)`` with a ``starlette.routing.BaseRoute``.
    :return: nothing.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------


@hookspec
def on_signin(platform: Platform, event: dict[str, Any]) -> Any:
    """Called after every sign-in attempt, successful or not.

    :param platform: the running platform.
    :param event: ``{"success", "username", "userid", "impostorid", "remoteip", "clientagent",
        "clientversion", "type", "reason"}``; ``userid`` is ``None`` when no user matched.
    :return: nothing (or an awaitable); a failing observer is logged and ignored.

    .. versionadded:: 0.1
    """


@hookspec
def on_document_change(
    platform: Platform, collection: str, operation: str, document: dict[str, Any]
) -> Any:
    """Called after the data layer inserted, updated or deleted a document.

    :param platform: the running platform.
    :param collection: the collection name.
    :param operation: ``"insert"``, ``"update"`` or ``"delete"``.
    :param document: the document as stored after the change (before it, for deletes).
    :return: nothing (or an awaitable); a failing observer is logged and ignored.

    .. versionadded:: 0.1
    """


@hookspec
def on_session_closed(platform: Platform, session: Any) -> Any:
    """Called when a client connection closes, on any transport, after its timers stopped.

    Plugins release what they hold for the connection here (watches, queue consumers).

    :param platform: the running platform.
    :param session: the :class:`iapflow.session.Session` that closed; ``session.id`` is unique.
    :return: nothing (or an awaitable); a failing observer is logged and ignored.

    .. versionadded:: 0.1
    """
