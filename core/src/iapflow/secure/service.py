"""Storage access for a capability's own service, after it checked the caller's rights the
way its commands promise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iapflow.contracts.storage import Document, Filter
from iapflow.errors import DuplicateKeyError
from iapflow.secure.acl import (
    fold,
)
from iapflow.secure.documents import (
    duplicate,
)

if TYPE_CHECKING:
    from iapflow.secure.base import LayerBase


class ServiceWrites:
    """Storage access for a capability's own service, after it checked the caller's rights the
    way its commands promise (work items: invoke on the queue). Documents are written as
    given, without ACL filters or collection rules; observers still hear of every change.
    Nothing else in iapflow reaches storage past the data layer."""

    def __init__(self, layer: LayerBase) -> None:
        self._layer = layer
        self._storage = layer.storage

    async def find(
        self,
        collection: str,
        filter: Filter,
        *,
        projection: dict[str, Any] | None = None,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> list[Document]:
        """Documents matching ``filter``."""
        return await self._storage.find(
            collection, filter, projection=projection, sort=sort, limit=limit
        )

    async def find_one(self, collection: str, filter: Filter) -> Document | None:
        """The first document matching ``filter``."""
        return await self._storage.find_one(collection, filter)

    async def count(self, collection: str, filter: Filter) -> int:
        """How many documents match ``filter``."""
        return await self._storage.count(collection, filter)

    async def insert_many(self, collection: str, docs: list[Document]) -> None:
        """Insert ``docs`` (complete, system fields included), all or none."""
        await self._layer._insert_all(collection, docs)

    async def update_one(
        self, collection: str, filter: Filter, update: dict[str, Any]
    ) -> Document | None:
        """Apply operators to the first match; the document after, or ``None``."""
        try:
            doc = await self._storage.update_one(collection, filter, update)
        except DuplicateKeyError as exc:
            raise duplicate(collection, exc) from None
        if doc is not None:
            await self._layer._changed(collection, "update", doc)
        return doc

    async def find_one_and_update(
        self,
        collection: str,
        filter: Filter,
        update: dict[str, Any],
        *,
        sort: list[tuple[str, int]],
    ) -> Document | None:
        """Atomically update the first match in ``sort`` order (work item pops)."""
        doc = await self._storage.find_one_and_update(collection, filter, update, sort=sort)
        if doc is not None:
            await self._layer._changed(collection, "update", doc)
        return doc

    async def update_many(
        self, collection: str, filter: Filter, update: dict[str, Any]
    ) -> tuple[int, int]:
        """Apply operators to every match: ``(matched, modified)``."""
        return await self._storage.update_many(collection, filter, update)

    async def delete_many(self, collection: str, filter: Filter) -> int:
        """Delete every match in bulk (observers are not told of each): how many."""
        return await self._storage.delete_many(collection, filter)

    async def create_index(
        self, collection: str, keys: list[tuple[str, int | str]], *, unique: bool = False
    ) -> str:
        """Ensure an index a service's queries need."""
        return await self._storage.create_index(collection, keys, unique=unique)

    async def delete(self, collection: str, filter: Filter) -> list[Document]:
        """Delete every match; return what was deleted."""
        docs = await self._storage.find(collection, filter)
        if not docs:
            return []
        ids = [d["_id"] for d in docs]
        await self._storage.delete_many(collection, fold(filter, {"_id": {"$in": ids}}))
        for doc in docs:
            await self._layer._changed(collection, "delete", doc)
        return docs
