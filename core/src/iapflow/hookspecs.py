"""Every hook an iapflow plugin can implement, grouped by concern.

Hook names follow fixed verbs: ``register_*`` hands the plugin a ``register`` callback,
``prepare``/``startup``/``shutdown`` bracket the server's life, ``wrap_*`` put a plugin's code
around the kernel's (telemetry), ``on_*`` are notifications. A failing ``on_*`` observer is
logged and never breaks a request; every other hook's errors propagate. Implementations of
``startup``, ``shutdown`` and ``on_*`` may be ``async def``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp

    from iapflow.contracts.agents import RuntimeFactory
    from iapflow.contracts.auth import AuthProvider
    from iapflow.contracts.broker import BrokerFactory
    from iapflow.contracts.storage import StorageFactory
    from iapflow.dispatch import CustomHandler, RegisterCommand
    from iapflow.platform import Platform
    from iapflow.secure.rules import RulesFactory
    from iapflow.session import Session
    from iapflow.telemetry import BackendCall, CommandCall
    from iapflow.web import RegisterUi

hookspec = pluggy.HookspecMarker("iapflow")

# ---------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def prepare(platform: Platform) -> None:
    """Called once while the platform prepares, before any store, broker or server starts:
    resolve the backends this plugin chose in its config section and check what can be checked
    without starting anything, so that a mistake stops ``iapflow serve`` at once.

    :param platform: the :class:`iapflow.platform.Platform` being prepared (``config`` with
        every section bound, ``plugins``, ``stash``); storage and the data layer are not
        started yet.
    :return: nothing; an exception (best a :class:`iapflow.errors.StartupError` or
        :class:`~iapflow.errors.ConfigError` saying what to change) stops startup.

    .. versionadded:: 0.2
    """


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
# config
# ---------------------------------------------------------------------------------------------


@hookspec
def register_config(register: Callable[[str, type[BaseModel]], None]) -> None:
    """Called when the platform is built, to collect the config sections plugins own.

    :param register: call ``register(section, model)``; ``model`` is a pydantic model whose
        fields are the keys of ``[section]`` (defaults included). The section is validated with
        it (unknown keys refused, with a "did you mean"), and code reads it as
        ``platform.config.section(model)``. Two plugins registering one section, or a section
        of the kernel's own, fail startup.
    :return: nothing.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------


@hookspec
def register_storage(register: Callable[[str, StorageFactory], None]) -> None:
    """Called at startup to collect storage backends.

    :param register: call ``register(name, factory)`` for each backend this plugin provides;
        ``factory(options, context)`` returns an :class:`iapflow.contracts.storage.Storage`
        (:data:`iapflow.contracts.storage.StorageFactory`). The name is what ``[storage] backend =
        "..."`` selects. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def register_collection_rules(register: Callable[[str, RulesFactory], None]) -> None:
    """Called when the platform starts, to collect the rules a capability adds to the generic
    document commands on its collections (see :mod:`iapflow.secure.rules`).

    :param register: call ``register(collection, factory)``; ``factory(platform)`` returns an
        :class:`iapflow.secure.rules.CollectionRules`. Several plugins may register rules for one
        collection; all apply, the built-ins' first.
    :return: nothing.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------------------------------------
# messaging
# ---------------------------------------------------------------------------------------------


@hookspec
def register_brokers(register: Callable[[str, BrokerFactory], None]) -> None:
    """Called while the platform prepares, to collect messaging backends.

    :param register: call ``register(name, factory)`` for each backend this plugin provides;
        ``factory(options, context)`` returns an :class:`iapflow.contracts.broker.Broker`
        (``options`` are the ``[messaging]`` keys besides ``backend``, ``context`` a
        :class:`iapflow.contracts.broker.BrokerContext`). The name is what
        ``[messaging] backend = "..."`` selects. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# auth
# ---------------------------------------------------------------------------------------------


@hookspec
def register_auth_providers(register: Callable[[str, AuthProvider], None]) -> None:
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
def register_agent_runtimes(register: Callable[[str, RuntimeFactory], None]) -> None:
    """Called while the platform prepares, to collect agent runtimes (where Node-RED runs).

    :param register: call ``register(name, factory)`` for each runtime this plugin provides;
        ``factory(options, context)`` returns an :class:`iapflow.contracts.agents.AgentRuntime`
        (``options`` are the ``[agents]`` keys besides ``runtime``, ``context`` a
        :class:`iapflow.contracts.agents.RuntimeContext`). The name is what ``[agents] runtime =
        "..."`` selects. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


@hookspec
def register_commands(register: RegisterCommand) -> None:
    """Called at startup to collect API commands, which every transport reaches.

    :param register: call ``register(name, handler, aliases=(), signed_in=True,
        authenticates=False, proto=None)``; ``handler(request)`` is an ``async`` function
        taking an :class:`iapflow.dispatch.Request` and returning a dict of fields to add to
        the reply. With ``signed_in=False`` the command runs for anonymous connections too;
        ``authenticates=True`` marks a command whose ``jwt`` is a credential it checks itself
        (``signin``). ``proto`` is an :class:`iapflow.dispatch.Proto` giving the command's
        protobuf messages, so that it works on ``/ws/v2`` and gRPC as well; without one it is
        on the JSON protocol only. Two plugins registering one name fail startup.
    :return: nothing.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``authenticates`` and ``proto``.
    """


@hookspec
def register_customcommands(register: Callable[[str, CustomHandler], None]) -> None:
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
def register_routes(register: Callable[[BaseRoute], None]) -> None:
    """Called when the web app is built, to add HTTP or websocket routes.

    :param register: call ``register(route)`` with a ``starlette.routing.BaseRoute``.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def register_ui(register: RegisterUi) -> None:
    """Called when the web app is built, to collect the web interface's pages.

    :param register: call ``register(name, directory, modules)``: the files of ``directory``
        (``.js``, ``.css``, images) are served under ``/ui/pages/<name>/``, and each of
        ``modules`` (file names in it) is imported by the interface when it loads. A module
        calls ``registerPage({id, title, render, ...})`` from ``/ui/registry.js``
        (docs/web-ui.md) to put a page in the navigation. Two plugins registering one name
        fail startup.
    :return: nothing.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------------------------------------
# telemetry
# ---------------------------------------------------------------------------------------------


@hookspec
def wrap_command(  # type: ignore[empty-body]
    call: CommandCall,
    proceed: Callable[[], Awaitable[Any]],
) -> Awaitable[Any]:
    """Called around every command dispatch, on every transport, when at least one plugin
    implements it (otherwise the handler is called directly).

    :param call: an :class:`iapflow.telemetry.CommandCall`: ``command``, ``transport``
        (``json``, ``proto``, ``grpc``), ``session_id``, and ``principal`` once the caller is
        known (set while ``proceed`` runs).
    :param proceed: call it (no arguments) and await the result to run the command; an
        :class:`iapflow.errors.ApiError` it raises is the client's error reply.
    :return: an awaitable of what ``proceed()`` gave (``async def`` does it); let its
        exceptions through. The first registered plugin's wrapper is outermost.

    .. versionadded:: 0.2
    """


@hookspec
def wrap_storage(  # type: ignore[empty-body]
    call: BackendCall,
    proceed: Callable[[], Awaitable[Any]],
) -> Awaitable[Any]:
    """Called around every call the secure data layer makes to the storage backend and to its
    file store, when at least one plugin implements it.

    :param call: an :class:`iapflow.telemetry.BackendCall`: ``backend`` (``storage`` or
        ``files``), ``method`` (``find``, ``insert_one``, ``upload``...) and ``target`` (the
        collection).
    :param proceed: call it and await the result to make the call.
    :return: an awaitable of what ``proceed()`` gave; let its exceptions through.

    .. versionadded:: 0.2
    """


@hookspec
def wrap_broker(  # type: ignore[empty-body]
    call: BackendCall,
    proceed: Callable[[], Awaitable[Any]],
) -> Awaitable[Any]:
    """Called around every call to the messaging backend (``publish``, ``queue_exists``...)
    and to a connection's broker session (``declare_queue``, ``consume``, ``bind``...), when
    at least one plugin implements it.

    :param call: an :class:`iapflow.telemetry.BackendCall`: ``backend`` (``broker`` or
        ``broker session``), ``method`` and ``target`` (the queue or exchange).
    :param proceed: call it and await the result to make the call.
    :return: an awaitable of what ``proceed()`` gave; let its exceptions through.

    .. versionadded:: 0.2
    """


@hookspec
def wrap_asgi(  # type: ignore[empty-body]
    app: ASGIApp,
) -> ASGIApp:
    """Called once when the web app is built, to put ASGI middleware around every HTTP request
    and websocket connection (an OpenTelemetry ASGI middleware, for instance).

    :param app: the ASGI app inside (the routes, or an earlier plugin's middleware).
    :return: the ASGI app to use instead, usually ``Middleware(app)``.

    .. versionadded:: 0.2
    """


@hookspec
def on_session_opened(platform: Platform, session: Session) -> Any:
    """Called when a client connection opens, on any transport, before its first message.

    :param platform: the running platform.
    :param session: the new :class:`iapflow.session.Session` (``protocol``, ``remote``).
    :return: nothing (or an awaitable); a failing observer is logged and ignored.

    .. versionadded:: 0.2
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
def on_session_closed(platform: Platform, session: Session) -> Any:
    """Called when a client connection closes, on any transport, after its timers stopped.

    Plugins release what they hold for the connection here (watches, queue consumers).

    :param platform: the running platform.
    :param session: the :class:`iapflow.session.Session` that closed; ``session.id`` is unique.
    :return: nothing (or an awaitable); a failing observer is logged and ignored.

    .. versionadded:: 0.1
    """
