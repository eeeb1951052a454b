"""Older versions and deleted documents, from the history, with the rights of the document
or of its deleted copy."""

from __future__ import annotations

from typing import Any

from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied, ApiError, DuplicateKeyError
from iapflow.jsonutil import utcnow
from iapflow.secure import users
from iapflow.secure.acl import (
    DELETE,
    READ,
    UPDATE,
    has_right,
)
from iapflow.secure.base import LayerBase
from iapflow.secure.documents import (
    check_history_write,
    check_writable,
    duplicate,
)
from iapflow.secure.history import Change, history_collection, version_of
from iapflow.secure.principal import Principal


class Versions(LayerBase):
    """``document_version``, ``deleted_documents``, ``restore``."""

    async def document_version(
        self, principal: Principal, collection: str, doc_id: Any, version: int
    ) -> Document:
        """The document ``doc_id`` as it was at ``version``. Needs read right on the current
        document or, when it was deleted, on its deleted copy."""
        if not isinstance(doc_id, str) or not doc_id:
            raise ApiError("id of the document is required")
        current = await self.get(principal, collection, doc_id)
        if current is not None:
            last, created = version_of(current), current.get("_created")
            if version == last:
                return current
        else:
            deleted = await self._deleted_copy(principal, collection, doc_id, READ)
            if deleted is None:
                raise ApiError(
                    f"document {doc_id} not found in {collection}, or you lack read right on it"
                )
            last, created = version_of(deleted), deleted.get("_created")
        if version > last:
            raise ApiError(f"version {version} of {doc_id} does not exist; the last is {last}")
        if not self.history.tracked(collection):
            raise ApiError(f"{collection} keeps no history, so only the current version exists")
        rebuilt = await self.history.rebuild(collection, doc_id, created, version)
        return self._scrub(collection, rebuilt)

    async def _deleted_copy(
        self,
        principal: Principal,
        collection: str,
        doc_id: str,
        rights: int,
        restorable: bool = False,
    ) -> Document | None:
        query: dict[str, Any] = {"id": doc_id, "_deleted": {"$exists": True}}
        if restorable:
            query["_restored"] = {"$exists": False}
        hist = history_collection(collection)
        return await self.history.last_deleted(
            collection, self._filter(principal, hist, rights, query)
        )

    async def deleted_documents(
        self, principal: Principal, collection: str, *, top: int, skip: int
    ) -> list[Document]:
        """Deleted documents of ``collection`` not restored since, whose deleted copy the
        caller may read, newest deletion first; each with ``_deleted``, ``_deletedby``,
        ``_deletedbyid``."""
        query = {"_deleted": {"$exists": True}, "_restored": {"$exists": False}}
        final = self._filter(principal, history_collection(collection), READ, query)
        records = await self.history.deleted(collection, final, top=top, skip=skip)
        result = []
        for record in records:
            item = record.get("item")
            if isinstance(item, dict):
                stamp = {k: record.get(k) for k in ("_deleted", "_deletedby", "_deletedbyid")}
                result.append(self._scrub(collection, {**item, **stamp}))
        return result

    async def restore(self, principal: Principal, collection: str, doc_id: Any) -> Document:
        """Put a deleted document back, with its ACL, as a new version. Needs update or delete
        right on the deleted copy."""
        if not isinstance(doc_id, str) or not doc_id:
            raise ApiError("id of the deleted document is required")
        check_writable(collection)
        check_history_write(principal, collection)
        record = await self._deleted_copy(principal, collection, doc_id, READ, restorable=True)
        item = None if record is None else record.get("item")
        if record is None or not isinstance(item, dict):
            raise ApiError(f"no deleted document {doc_id} in {collection} that you may read")
        if not (has_right(principal, record, UPDATE) or has_right(principal, record, DELETE)):
            raise AccessDenied(
                f"restoring {doc_id} needs update or delete right on the deleted document"
            )
        is_user = collection == users.COLLECTION and item.get("_type") == "user"
        if is_user and not principal.is_admin:
            raise AccessDenied("only admins can restore users")
        check_writable(collection)
        doc = dict(item)
        doc.update(
            _version=version_of(item) + 1,
            _modified=utcnow(),
            _modifiedby=principal.name,
            _modifiedbyid=principal.id,
        )
        try:
            await self.storage.insert_one(collection, doc)
        except DuplicateKeyError as exc:
            raise ApiError(f"cannot restore {doc_id}: {duplicate(collection, exc)}") from None
        await self.history.record_changes(collection, [Change(item, doc, "restored")])
        await self.history.mark_restored(collection, record["_id"], principal.name, principal.id)
        found = self._rules_for(collection)
        if found is not None:
            await found.after_restore(principal, doc)
        await self._changed(collection, "insert", doc)
        return self._scrub(collection, dict(doc))
