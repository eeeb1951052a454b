"""A name -> value table filled by ``register_*`` hooks, refusing duplicate names loudly."""

from __future__ import annotations

from typing import Generic, TypeVar

from iapflow.errors import StartupError

T = TypeVar("T")


class Registry(Generic[T]):
    """Values by name, each remembering which plugin registered it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[T, str]] = {}

    def add(self, name: str, value: T, plugin: str) -> None:
        """Add ``value`` under ``name``; raise StartupError naming both plugins on a clash."""
        if name in self._items:
            other = self._items[name][1]
            raise StartupError(
                f"{self.kind} {name!r} is registered by both {other!r} and {plugin!r}; "
                f"block one of them in [plugins] blocked"
            )
        self._items[name] = (value, plugin)

    def get(self, name: str) -> T | None:
        """The value registered under ``name``, or ``None``."""
        item = self._items.get(name)
        return item[0] if item else None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, value)`` pairs in registration order."""
        return [(name, value) for name, (value, _plugin) in self._items.items()]

    def plugin_of(self, name: str) -> str | None:
        """The plugin that registered ``name``."""
        item = self._items.get(name)
        return item[1] if item else None
