"""Transitive role membership, cached and invalidated whenever ``users`` changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from iapflow import wellknown

Loader = Callable[[], Awaitable[list[dict[str, object]]]]


class RoleCache:
    """Maps a principal id to every role it belongs to, directly or through other roles."""

    def __init__(self, load_roles: Loader, ttl: float) -> None:
        self._load_roles = load_roles
        self._ttl = ttl
        self._parents: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}
        self._loaded_at = -1.0
        self._generation = 0
        self._resolved: dict[tuple[str, bool], list[dict[str, str]]] = {}
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget everything; the next lookup reloads the roles."""
        self._generation += 1
        self._loaded_at = -1.0
        self._resolved = {}

    async def _ensure(self) -> None:
        if self._loaded_at >= 0 and time.monotonic() - self._loaded_at < self._ttl:
            return
        async with self._lock:
            if self._loaded_at >= 0 and time.monotonic() - self._loaded_at < self._ttl:
                return
            generation = self._generation
            roles = await self._load_roles()
            parents: dict[str, set[str]] = {}
            names: dict[str, str] = {}
            for role in roles:
                role_id = str(role["_id"])
                names[role_id] = str(role.get("name", ""))
                members = role.get("members")
                for member in members if isinstance(members, list) else []:
                    if isinstance(member, dict) and isinstance(member.get("_id"), str):
                        parents.setdefault(member["_id"], set()).add(role_id)
            self._parents, self._names, self._resolved = parents, names, {}
            if generation == self._generation:
                self._loaded_at = time.monotonic()

    async def roles_of(
        self, principal_id: str, implicit_users: bool = True
    ) -> list[dict[str, str]]:
        """Every role of ``principal_id`` as ``{_id, name}``, sorted by name.

        Users are implicitly members of the built-in ``users`` role.
        """
        await self._ensure()
        key = (principal_id, implicit_users)
        cached = self._resolved.get(key)
        if cached is not None:
            return [dict(role) for role in cached]
        start = {principal_id}
        if implicit_users:
            start.add(wellknown.USERS)
        seen: set[str] = set()
        stack = list(start)
        while stack:
            current = stack.pop()
            for parent in self._parents.get(current, ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        if implicit_users:
            seen.add(wellknown.USERS)
        seen.discard(principal_id)
        roles = [
            {"_id": rid, "name": self._names.get(rid, "")} for rid in seen if rid in self._names
        ]
        roles.sort(key=lambda r: r["name"])
        self._resolved[key] = roles
        return [dict(role) for role in roles]

    async def name_of(self, role_id: str) -> str | None:
        """The name of a role, or ``None`` when ``role_id`` is not a role."""
        await self._ensure()
        return self._names.get(role_id)
