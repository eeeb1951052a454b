"""Typed per-platform state: what a plugin keeps for one running platform (its service, its
timer, its server), under a key that carries the value's type.

A plugin makes one :class:`StashKey` per thing it keeps, at module level::

    HUB = StashKey[WatchHub]("watch hub")

    @hookimpl
    def startup(platform):
        platform.stash[HUB] = WatchHub(...)

    def hub_for(platform) -> WatchHub:
        return platform.stash[HUB]

Keys compare by identity, so two plugins cannot clash by choosing the same name, and mypy
knows the type of ``platform.stash[HUB]``.
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast, overload

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """The key of one value of type ``T`` in a :class:`Stash`; ``name`` is for messages."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class Stash:
    """Values by :class:`StashKey`, one store per platform."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[StashKey[object], object] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._values[cast(StashKey[object], key)] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        try:
            return cast(T, self._values[cast(StashKey[object], key)])
        except KeyError:
            raise KeyError(f"{key.name} is not set up on this platform (not started?)") from None

    @overload
    def get(self, key: StashKey[T]) -> T | None: ...

    @overload
    def get(self, key: StashKey[T], default: D) -> T | D: ...

    def get(self, key: StashKey[T], default: object = None) -> object:
        """The value under ``key``, or ``default``."""
        return self._values.get(cast(StashKey[object], key), default)

    def setdefault(self, key: StashKey[T], default: T) -> T:
        """The value under ``key``, storing ``default`` first when there is none."""
        return cast(T, self._values.setdefault(cast(StashKey[object], key), default))

    def pop(self, key: StashKey[T]) -> T | None:
        """Remove and return the value under ``key`` (``None`` when there is none)."""
        return cast("T | None", self._values.pop(cast(StashKey[object], key), None))

    def __contains__(self, key: StashKey[T]) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)
