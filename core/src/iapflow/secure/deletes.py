"""Deletes: with the delete right, past the collection's rules, a copy of each deleted
document kept in the history."""

from __future__ import annotations

from typing import Any

from iapflow.errors import ApiError
from iapflow.secure.acl import (
    DELETE,
    fold,
)
from iapflow.secure.base import LayerBase
from iapflow.secure.documents import (
    check_history_write,
    check_writable,
    doc_key,
)
from iapflow.secure.history import BATCH
from iapflow.secure.principal import Principal


class Deletes(LayerBase):
    """``delete_one`` and ``delete_many``."""

    def _delete_filter(
        self, principal: Principal, collection: str, query: dict[str, Any], rules: bool = True
    ) -> dict[str, Any]:
        check_writable(collection, delete=True)
        check_history_write(principal, collection)
        final = self._filter(principal, collection, DELETE, query)
        found = self._rules_for(collection) if rules else None
        clause = found.delete_filter(principal) if found is not None else None
        return fold(final, clause) if clause else final

    async def delete_one(
        self, principal: Principal, collection: str, doc_id: Any, *, rules: bool = True
    ) -> int:
        """Delete one document by id if the caller has delete right on it (``rules=False`` as
        for :meth:`insert_one`; the rules' clean-up after a delete still runs)."""
        if not isinstance(doc_id, str) or not doc_id:
            raise ApiError("id of the document to delete is required")
        found = self._rules_for(collection) if rules else None
        if found is not None:
            deleted = await found.delete_one(principal, doc_id)
            if deleted is not None:
                return deleted
        final = self._delete_filter(principal, collection, {"_id": doc_id}, rules=False)
        doc = await self.storage.find_one(collection, final)
        if doc is None:
            raise ApiError(f"item {doc_id} not found, or you lack delete right on it")
        if found is not None:
            await found.check_delete(principal, doc)
        deleted = await self.storage.delete_one(
            collection,
            {"_id": doc_id, "_version": doc.get("_version")}
            if "_version" in doc
            else {"_id": doc_id},
        )
        if deleted:
            await self.history.record_deletes(collection, [doc], principal.name, principal.id)
            found = self._rules_for(collection)
            if found is not None:
                await found.after_delete(principal, [doc])
            await self._changed(collection, "delete", doc)
        return deleted

    async def delete_many(
        self, principal: Principal, collection: str, query: dict[str, Any]
    ) -> int:
        """Delete every matching document the caller has delete right on."""
        self._check_filter(principal, collection, query)
        final = self._delete_filter(principal, collection, query)
        found = self._rules_for(collection)
        if self.history.tracked(collection) or (found is not None and found.wants_deleted):
            deleted = await self._delete_tracked(principal, collection, final)
        else:
            deleted = await self.storage.delete_many(collection, final)
        if deleted:
            await self._on_bulk_change(collection)
        return deleted

    async def _delete_tracked(
        self, principal: Principal, collection: str, final: dict[str, Any]
    ) -> int:
        """Delete :data:`BATCH` documents at a time, keeping a copy of each in the history
        (when the collection keeps history) and handing them to the collection's rules."""
        found = self._rules_for(collection)
        total = 0
        while True:
            batch = await self.storage.find(collection, final, limit=BATCH)
            if not batch:
                return total
            ids = [d["_id"] for d in batch]
            deleted = await self.storage.delete_many(collection, fold(final, {"_id": {"$in": ids}}))
            gone = batch
            if deleted != len(batch):
                left = await self.storage.find(
                    collection, {"_id": {"$in": ids}}, projection={"_id": 1}
                )
                kept = {doc_key(d["_id"]) for d in left}
                gone = [d for d in batch if doc_key(d["_id"]) not in kept]
            await self.history.record_deletes(collection, gone, principal.name, principal.id)
            if found is not None and gone:
                await found.after_delete(principal, gone)
            total += deleted
            if deleted == 0 or len(batch) < BATCH:
                return total
