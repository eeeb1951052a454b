"""Plugin loading and the typed facade every hook call goes through.

Built-ins are plugins too (:data:`DEFAULT_PLUGINS`). Installed plugins are found through the
``iapflow`` entry-point group. ``pm.check_pending()`` runs after loading, so a misspelled hook
implementation fails startup instead of being silently ignored.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from iapflow import hookimpl, hookspecs
from iapflow._utils import await_me_maybe
from iapflow.errors import PluginError, StartupError
from iapflow.registry import Registry

if TYPE_CHECKING:
    from iapflow.dispatch import CommandSpec
    from iapflow.platform import Platform

log = logging.getLogger("iapflow.plugins")

ENTRY_POINT_GROUP = "iapflow"

DEFAULT_PLUGINS = (
    "iapflow.builtin.local_auth",
    "iapflow.builtin.audit",
    "iapflow.builtin.housekeeping",
    "iapflow.builtin.memory_broker",
    "iapflow.builtin.proto_transport",
    "iapflow.commands.admin",
    "iapflow.commands.signin",
    "iapflow.commands.documents",
    "iapflow.commands.collections",
    "iapflow.commands.history",
    "iapflow.commands.watch",
    "iapflow.commands.queues",
    "iapflow.commands.files",
    "iapflow.commands.workitems",
)

# First-party backend names and the distribution that provides each, for install hints.
FIRST_PARTY = {
    "mongo": "iapflow-mongo",
    "rabbit": "iapflow-rabbit",
    "nodered": "iapflow-nodered",
    # agent runtimes of iapflow-nodered
    "process": "iapflow-nodered",
    "docker": "iapflow-nodered",
    "kubernetes": "iapflow-nodered[kubernetes]",
    "stub": "iapflow-nodered",
}


def install_hint(kind: str, name: str) -> str:
    """The sentence telling a user how to get the plugin that provides backend ``name``."""
    dist = FIRST_PARTY.get(name, f"the plugin that provides {kind} {name!r}")
    if name in FIRST_PARTY:
        return f"{kind} backend {name!r} is not installed; install it with: pip install {dist}"
    return f"{kind} backend {name!r} is not installed; install {dist}"


@dataclass
class PluginInfo:
    """What ``iapflow plugins`` shows for one plugin."""

    name: str
    version: str
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False


class Plugins:
    """The plugin manager plus one typed method per hook."""

    def __init__(self, load_entry_points: bool = True, blocked: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager("iapflow")
        self.pm.add_hookspecs(hookspecs)
        for name in blocked:
            self.pm.set_blocked(name)
        for module_name in DEFAULT_PLUGINS:
            if not self.pm.is_blocked(module_name):
                self.pm.register(importlib.import_module(module_name), name=module_name)
        if load_entry_points:
            self._load_entry_points()
        self.pm.check_pending()

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.is_blocked(ep.name) or self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                dist = ep.dist.name if ep.dist else ep.value
                raise PluginError(
                    f"plugin {ep.name!r} from {dist} failed to import: {exc!r}; "
                    f"reinstall it or add it to [plugins] blocked"
                ) from exc
            self.pm.register(plugin, name=ep.name)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register an extra plugin object (tests and embedding apps use this)."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()

    # -- collection hooks ---------------------------------------------------------------------

    # Every loop over implementations below uses pluggy's calling order: the most recently
    # registered plugin first (installed plugins before built-ins), tryfirst/trylast honoured.

    def _collect(self, hook_name: str, kind: str) -> Registry[Any]:
        registry: Registry[Any] = Registry(kind)
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(name: str, value: Any, _p: str = plugin_name) -> None:
                registry.add(name, value, _p)

            impl.function(register=register)
        return registry

    def storage_backends(self) -> Registry[Any]:
        """Storage factories by backend name (``register_storage``)."""
        return self._collect("register_storage", "storage backend")

    def brokers(self) -> Registry[Any]:
        """Messaging backend factories by name (``register_brokers``)."""
        return self._collect("register_brokers", "messaging backend")

    def agent_runtimes(self) -> Registry[Any]:
        """Agent runtime factories by name (``register_agent_runtimes``)."""
        return self._collect("register_agent_runtimes", "agent runtime")

    def auth_providers(self) -> Registry[Any]:
        """Password sign-in providers by name (``register_auth_providers``)."""
        return self._collect("register_auth_providers", "auth provider")

    def commands(self) -> Registry[CommandSpec]:
        """Command handlers by name, aliases included (``register_commands``)."""
        from iapflow.dispatch import CommandSpec

        registry: Registry[CommandSpec] = Registry("command")
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(
                name: str,
                handler: Callable[..., Any],
                aliases: Iterable[str] = (),
                signed_in: bool = True,
                _p: str = plugin_name,
            ) -> None:
                spec = CommandSpec(name=name, handler=handler, signed_in=signed_in)
                registry.add(name, spec, _p)
                for alias in aliases:
                    registry.add(alias, spec, _p)

            impl.function(register=register)
        return registry

    def collection_rules(self) -> list[tuple[str, Any]]:
        """``(collection, factory)`` from ``register_collection_rules``, built-ins first."""
        found: list[tuple[str, Any]] = []

        def register(collection: str, factory: Any) -> None:
            found.append((collection, factory))

        # registration order (built-ins are registered first), not pluggy's calling order
        for impl in self.pm.hook.register_collection_rules.get_hookimpls():
            impl.function(register=register)
        return found

    def customcommands(self) -> Registry[Any]:
        """``customcommand`` sub-command handlers by name (``register_customcommands``)."""
        return self._collect("register_customcommands", "customcommand")

    def routes(self) -> list[Any]:
        """Extra routes from ``register_routes``."""
        routes: list[Any] = []
        self.pm.hook.register_routes(register=routes.append)
        return routes

    # -- lifecycle and notifications ----------------------------------------------------------

    async def startup(self, platform: Platform) -> None:
        """Run every ``startup`` implementation in pluggy's calling order, each to its end
        before the next is called; an error propagates and stops the server (the later ones
        are not called)."""
        for impl in reversed(self.pm.hook.startup.get_hookimpls()):
            await await_me_maybe(impl.function(platform=platform))

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

    async def on_session_closed(self, platform: Platform, session: Any) -> None:
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

    def info(self) -> list[PluginInfo]:
        """Name, version and implemented hooks of every registered plugin."""
        dists = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        result = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
            dist = dists.get(id(plugin))
            if dist is not None:
                version = dist.version
            else:
                from iapflow import __version__

                version = __version__
            result.append(PluginInfo(name, version, hooks, builtin=name in DEFAULT_PLUGINS))
        return sorted(result, key=lambda p: (not p.builtin, p.name))


def require(registry: Registry[Any], name: str, kind: str) -> Any:
    """The backend ``name`` from ``registry``, or a StartupError telling what to install."""
    value = registry.get(name)
    if value is None:
        known = ", ".join(registry.names()) or "none"
        raise PluginError(f"{install_hint(kind, name)} (installed {kind} backends: {known})")
    return value


__all__ = ["DEFAULT_PLUGINS", "PluginInfo", "Plugins", "StartupError", "hookimpl", "require"]
