"""The state and helpers every part of the secure data layer shares: the storage backend, the
history, the collection rules, the caller's ACL filter, the input checks and the observers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from iapflow.contracts.storage import Document, Storage
from iapflow.errors import ApiError, DuplicateKeyError, StorageError
from iapflow.secure import bounds, users
from iapflow.secure.acl import (
    DELETE,
    READ,
    UPDATE,
    access_filter,
    acl_condition,
    acl_field,
    fold,
)
from iapflow.secure.documents import (
    BulkObserver,
    ChangeObserver,
    PrincipalResolver,
    duplicate,
)
from iapflow.secure.guards import guard, guard_secret_holder
from iapflow.secure.history import History
from iapflow.secure.principal import Principal
from iapflow.secure.rules import CollectionRules, RuleSet
from iapflow.secure.service import ServiceWrites


class LayerBase:
    """The secure data layer's shared state; :class:`iapflow.secure.layer.DataLayer` is
    the whole of it."""

    def __init__(
        self,
        storage: Storage,
        *,
        bcrypt_rounds: int,
        on_change: ChangeObserver,
        on_bulk_change: BulkObserver,
        resolve_principal: PrincipalResolver,
        role_name: Callable[[str], Awaitable[str | None]],
        history: History | None = None,
        max_time_ms: int = 0,
    ) -> None:
        self.storage = storage
        self.history = history or History(storage)
        self.max_time_ms = max_time_ms
        """How long the store may work on one client read (``[query] max_time_ms``; 0: no
        limit)."""
        self._on_change = on_change
        self._on_bulk_change = on_bulk_change
        self._resolve_principal = resolve_principal
        self._role_name = role_name
        self._upsert_locks: dict[str, asyncio.Lock] = {}
        self._rules: dict[str, RuleSet] = {}
        self.add_rules(users.COLLECTION, users.UserRules(storage, bcrypt_rounds))
        self.service = ServiceWrites(self)
        """Writes of capabilities that checked the caller's rights themselves."""

    def add_rules(self, collection: str, rules: CollectionRules) -> None:
        """Apply ``rules`` to the generic document commands' writes to ``collection`` (after
        any rules registered before)."""
        self._rules.setdefault(collection, RuleSet()).add(rules)

    def _rules_for(self, collection: str) -> RuleSet | None:
        return self._rules.get(collection)

    def _filter(
        self, principal: Principal, collection: str, rights: int, query: Mapping[str, Any]
    ) -> dict[str, Any]:
        clause = access_filter(principal, rights, collection)
        if (
            clause
            and collection == users.COLLECTION
            and rights & (READ | UPDATE)
            and not rights & DELETE
        ):
            # A user's own document is always readable and updatable.
            clause = {"$or": [{"_id": principal.id}, clause]}
        return fold(query, clause)

    async def _queryas(
        self, collection: str, query: dict[str, Any], queryas: Any
    ) -> dict[str, Any]:
        if queryas in (None, ""):
            return query
        if not isinstance(queryas, str):
            raise ApiError("queryas must be a user or role id")
        ids = await self._resolve_principal(queryas)
        if ids is None:
            raise ApiError(f"queryas: no user or role with id {queryas!r}")
        return fold(query, {acl_field(collection): acl_condition(ids, READ)})

    def _check_input(self, principal: Principal, value: Any, what: str = "the filter") -> None:
        guard(value, admin=principal.is_admin)
        bounds.check_regexes(value)
        bounds.check_size(value, what)

    def _check_filter(
        self,
        principal: Principal,
        collection: str,
        query: Any,
        projection: dict[str, Any] | None = None,
    ) -> None:
        self._check_input(principal, query)
        if projection is not None:
            bounds.check_projection(projection)
            self._check_input(principal, projection, "the projection")
        if collection == users.COLLECTION:
            guard_secret_holder(query, projection)

    async def get(
        self, principal: Principal, collection: str, doc_id: str, rights: int = READ
    ) -> Document | None:
        """One document by id if the caller has ``rights`` on it."""
        found = await self.storage.find_one(
            collection, self._filter(principal, collection, rights, {"_id": doc_id})
        )
        return None if found is None else self._scrub(collection, found)

    @staticmethod
    def _scrub(collection: str, doc: Document) -> Document:
        if collection == users.COLLECTION:
            doc.pop("passwordhash", None)
        return doc

    async def _name_aces(self, acl: list[dict[str, Any]]) -> None:
        for ace in acl:
            if not ace.get("name"):
                ace["name"] = await self._role_name(ace["_id"]) or ""

    async def _changed(self, collection: str, operation: str, doc: Document) -> None:
        await self._on_change(collection, operation, doc)

    async def _insert_all(self, collection: str, docs: list[Document]) -> None:
        """Insert ``docs`` all or none, then tell the observers of each."""
        try:
            await self.storage.insert_many(collection, docs)
        except StorageError as exc:
            # Ordered inserts stop at the first failure: take back the ones stored before it.
            await self.storage.delete_many(
                collection, {"$or": [{"_id": d["_id"], "_created": d["_created"]} for d in docs]}
            )
            if isinstance(exc, DuplicateKeyError):
                raise duplicate(collection, exc) from None
            raise
        for doc in docs:
            await self._changed(collection, "insert", doc)
