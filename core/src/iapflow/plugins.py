"""Plugin loading and the typed facade every hook call goes through.

Built-ins are plugins too (:data:`iapflow.builtin.BUILTINS`), registered first. Installed
plugins are found through the ``iapflow`` entry-point group. ``pm.check_pending()`` runs after
loading, so a misspelled hook implementation fails startup instead of being silently ignored.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from iapflow import __version__, hookimpl, hookspecs
from iapflow._utils import await_me_maybe
from iapflow.builtin import BUILTINS
from iapflow.errors import PluginError, StartupError
from iapflow.registry import Registry

if TYPE_CHECKING:
    from pydantic import BaseModel
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp

    from iapflow.contracts.agents import RuntimeFactory
    from iapflow.contracts.auth import AuthProvider
    from iapflow.contracts.broker import BrokerFactory
    from iapflow.contracts.storage import StorageFactory
    from iapflow.dispatch import CommandSpec, CustomHandler, Handler, Proto
    from iapflow.platform import Platform
    from iapflow.secure.rules import RulesFactory
    from iapflow.session import Session
    from iapflow.telemetry import Wrapper
    from iapflow.web import UiPackage

log = logging.getLogger("iapflow.plugins")

ENTRY_POINT_GROUP = "iapflow"
CORE_DIST = "iapflow"

# Backends of the first-party plugins and the distribution that provides each, for the
# install hint when a config names one that is not installed.
FIRST_PARTY = {
    "mongo": "iapflow-mongo",
    "rabbit": "iapflow-rabbit",
    "process": "iapflow-nodered",
    "docker": "iapflow-nodered",
    "kubernetes": "iapflow-nodered[kubernetes]",
    "stub": "iapflow-nodered",
}


def install_hint(kind: str, name: str) -> str:
    """The sentence telling a user how to get the plugin that provides backend ``name``."""
    if name in FIRST_PARTY:
        return (
            f"{kind} backend {name!r} is not installed; "
            f"install it with: pip install {FIRST_PARTY[name]}"
        )
    return f"{kind} backend {name!r} is not installed; install the plugin that provides it"


@dataclass
class PluginInfo:
    """What ``iapflow plugins`` and ``/-/plugins`` show for one plugin."""

    name: str
    dist: str
    """The distribution that installed it (``iapflow`` for built-ins)."""
    version: str
    """That distribution's version."""
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False
    provides: dict[str, list[str]] = field(default_factory=dict)
    """Backends it provides, by kind (``{"storage": ["mongo"]}``)."""
    selected: dict[str, str] = field(default_factory=dict)
    """Its backends the configuration selected, by kind (``{"storage": "mongo"}``)."""


@cache
def _dists_by_package() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def _dist_of(plugin: object) -> tuple[str, str]:
    """``(distribution, version)`` of the code behind ``plugin`` (a module or an object)."""
    module = plugin.__name__ if isinstance(plugin, type(metadata)) else type(plugin).__module__
    top = module.split(".")[0]
    for dist in _dists_by_package().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if top == "iapflow":
        return CORE_DIST, __version__
    return top, "unknown"


class Plugins:
    """The plugin manager plus one typed method per hook."""

    def __init__(self, load_entry_points: bool = True, blocked: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager("iapflow")
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, tuple[str, str]] = {}
        for name in blocked:
            self.pm.set_blocked(name)
        for module_name in BUILTINS:
            if not self.pm.is_blocked(module_name):
                self.pm.register(importlib.import_module(module_name), name=module_name)
                self._dists[module_name] = (CORE_DIST, __version__)
        if load_entry_points:
            self._load_entry_points()
        self.pm.check_pending()

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.is_blocked(ep.name) or self.pm.get_plugin(ep.name) is not None:
                continue
            dist = ep.dist.name if ep.dist else ep.value
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from {dist} failed to import: {exc!r}; "
                    f"reinstall it or add it to [plugins] blocked"
                ) from exc
            if self.pm.is_registered(plugin):
                continue
            self.pm.register(plugin, name=ep.name)
            if ep.dist is not None:
                self._dists[ep.name] = (ep.dist.name, ep.dist.version)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register an extra plugin object (tests and embedding apps use this). Registering
        one that is already registered (an installed plugin a test registers again) does
        nothing; another plugin under a taken name is an error."""
        if self.pm.is_registered(plugin):
            return
        if name is not None and self.pm.get_plugin(name) is not None:
            raise PluginError(f"a different plugin is already registered as {name!r}")
        self.pm.register(plugin, name=name)
        self.pm.check_pending()

    def _implementations(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        """``(plugin name, function)`` per implementation, in pluggy's calling order (the
        most recently registered plugin first, tryfirst/trylast honoured)."""
        hook = getattr(self.pm.hook, hook_name)
        return [
            (self.pm.get_name(impl.plugin) or repr(impl.plugin), impl.function)
            for impl in reversed(hook.get_hookimpls())
        ]

    # -- collection hooks ---------------------------------------------------------------------

    def _collect(self, hook_name: str, kind: str) -> Registry[Any]:
        registry: Registry[Any] = Registry(kind)
        for plugin_name, function in self._implementations(hook_name):

            def register(name: str, value: Any, _p: str = plugin_name) -> None:
                registry.add(name, value, _p)

            function(register=register)
        return registry

    def config_sections(self) -> Registry[type[BaseModel]]:
        """Plugins' config section models by section name (``register_config``)."""
        return self._collect("register_config", "config section")

    def storage_backends(self) -> Registry[StorageFactory]:
        """Storage factories by backend name (``register_storage``)."""
        return self._collect("register_storage", "storage backend")

    def brokers(self) -> Registry[BrokerFactory]:
        """Messaging backend factories by name (``register_brokers``)."""
        return self._collect("register_brokers", "messaging backend")

    def agent_runtimes(self) -> Registry[RuntimeFactory]:
        """Agent runtime factories by name (``register_agent_runtimes``)."""
        return self._collect("register_agent_runtimes", "agent runtime")

    def auth_providers(self) -> Registry[AuthProvider]:
        """Password sign-in providers by name (``register_auth_providers``)."""
        return self._collect("register_auth_providers", "auth provider")

    def customcommands(self) -> Registry[CustomHandler]:
        """``customcommand`` sub-command handlers by name (``register_customcommands``)."""
        return self._collect("register_customcommands", "customcommand sub-command")

    def commands(self) -> Registry[CommandSpec]:
        """Command handlers by name, aliases included (``register_commands``)."""
        from iapflow.dispatch import CommandSpec

        registry: Registry[CommandSpec] = Registry("command")
        for plugin_name, function in self._implementations("register_commands"):

            def register(
                name: str,
                handler: Handler,
                aliases: Iterable[str] = (),
                signed_in: bool = True,
                authenticates: bool = False,
                proto: Proto | None = None,
                _p: str = plugin_name,
            ) -> None:
                spec = CommandSpec(name, handler, signed_in, authenticates, proto, _p)
                registry.add(name, spec, _p)
                for alias in aliases:
                    registry.add(alias, spec, _p)

            function(register=register)
        return registry

    def collection_rules(self) -> list[tuple[str, RulesFactory]]:
        """``(collection, factory)`` from ``register_collection_rules``, built-ins first."""
        found: list[tuple[str, RulesFactory]] = []
        for _plugin, function in reversed(self._implementations("register_collection_rules")):
            function(register=lambda collection, factory: found.append((collection, factory)))
        return found

    def routes(self) -> list[BaseRoute]:
        """Extra routes from ``register_routes``, built-ins first."""
        routes: list[BaseRoute] = []
        for _plugin, function in reversed(self._implementations("register_routes")):
            function(register=routes.append)
        return routes

    def ui_packages(self) -> list[UiPackage]:
        """The web interface's page packages from ``register_ui``, built-ins first."""
        from iapflow.web import UiPackage

        registry: Registry[UiPackage] = Registry("UI package")
        for plugin_name, function in reversed(self._implementations("register_ui")):

            def register(
                name: str, directory: Path | str, modules: Sequence[str], _p: str = plugin_name
            ) -> None:
                registry.add(name, UiPackage(name, Path(directory), tuple(modules)), _p)

            function(register=register)
        return [package for _name, package in registry.items()]

    # -- telemetry ------------------------------------------------------------------------------

    def wrappers(self, hook_name: str) -> list[Wrapper]:
        """The implementations of a ``wrap_*`` hook, the first registered plugin first (it is
        outermost)."""
        return [function for _plugin, function in reversed(self._implementations(hook_name))]

    def wrap_asgi(self, app: ASGIApp) -> ASGIApp:
        """``app`` inside every ``wrap_asgi`` middleware, the first registered outermost."""
        for _plugin, function in self._implementations("wrap_asgi"):
            app = function(app=app)
        return app

    # -- lifecycle and notifications ----------------------------------------------------------

    def prepare(self, platform: Platform) -> None:
        """Run every ``prepare`` implementation, built-ins first; an error stops startup."""
        for _plugin, function in reversed(self._implementations("prepare")):
            function(platform=platform)

    async def startup(self, platform: Platform) -> None:
        """Run every ``startup`` implementation in pluggy's calling order, each to its end
        before the next is called; an error propagates and stops the server (the later ones
        are not called)."""
        for _plugin, function in self._implementations("startup"):
            await await_me_maybe(function(platform=platform))

    async def shutdown(self, platform: Platform) -> None:
        """Run every ``shutdown`` implementation; errors are logged so all of them run."""
        await self._notify("shutdown", platform=platform)

    async def on_signin(self, platform: Platform, event: dict[str, Any]) -> None:
        """Tell observers about a sign-in attempt."""
        await self._notify("on_signin", platform=platform, event=event)

    async def on_document_change(
        self, platform: Platform, collection: str, operation: str, document: dict[str, Any]
    ) -> None:
        """Tell observers about a document change."""
        await self._notify(
            "on_document_change",
            platform=platform,
            collection=collection,
            operation=operation,
            document=document,
        )

    async def on_session_opened(self, platform: Platform, session: Session) -> None:
        """Tell observers a connection opened."""
        await self._notify("on_session_opened", platform=platform, session=session)

    async def on_session_closed(self, platform: Platform, session: Session) -> None:
        """Tell observers a connection closed."""
        await self._notify("on_session_closed", platform=platform, session=session)

    async def _notify(self, hook_name: str, **kwargs: Any) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            try:
                await await_me_maybe(impl.function(**{a: kwargs[a] for a in impl.argnames}))
            except Exception:
                log.exception("plugin %s failed in %s", self.pm.get_name(impl.plugin), hook_name)

    # -- introspection ------------------------------------------------------------------------

    def info(self, selected: Mapping[str, str] | None = None) -> list[PluginInfo]:
        """Every registered plugin: its distribution and version, the hooks it implements,
        the backends it provides and which of them ``selected`` (kind -> backend name) picks."""
        provided: dict[str, dict[str, list[str]]] = {}
        for kind, registry in (
            ("storage", self.storage_backends()),
            ("messaging", self.brokers()),
            ("agent runtime", self.agent_runtimes()),
            ("auth provider", self.auth_providers()),
        ):
            for name in registry.names():
                owner = registry.plugin_of(name) or ""
                provided.setdefault(owner, {}).setdefault(kind, []).append(name)
        result = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            dist, version = self._dists.get(name) or _dist_of(plugin)
            provides = provided.get(name, {})
            result.append(
                PluginInfo(
                    name=name,
                    dist=dist,
                    version=version,
                    hooks=sorted(c.name for c in self.pm.get_hookcallers(plugin) or []),
                    builtin=name in BUILTINS,
                    provides=provides,
                    selected={
                        kind: backend
                        for kind, backend in (selected or {}).items()
                        if backend in provides.get(kind, [])
                    },
                )
            )
        return sorted(result, key=lambda p: (not p.builtin, p.name))


def require(registry: Registry[Any], name: str, kind: str) -> Any:
    """The backend ``name`` from ``registry``, or a StartupError telling what to install."""
    value = registry.get(name)
    if value is None:
        known = ", ".join(registry.names()) or "none"
        raise PluginError(f"{install_hint(kind, name)} (installed {kind} backends: {known})")
    return value


__all__ = ["PluginInfo", "Plugins", "StartupError", "hookimpl", "require"]
