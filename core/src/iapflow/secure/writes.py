"""Inserts, replaces and operator updates: system fields stamped, the ACL cleaned, the
collection's rules applied, every change recorded in the history."""

from __future__ import annotations

import asyncio
from typing import Any

from iapflow import wellknown
from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied, ApiError, DuplicateKeyError
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow.secure.acl import (
    FULL_CONTROL,
    READ,
    UPDATE,
    clean_acl,
    ensure_ace,
    fold,
    has_right,
)
from iapflow.secure.base import LayerBase
from iapflow.secure.delta import same
from iapflow.secure.documents import (
    REPLACE_RETRIES,
    SYSTEM_FIELDS,
    UPDATE_RETRIES,
    check_history_write,
    check_writable,
    content,
    doc_key,
    duplicate,
    uniqueness_fields,
    update_reason,
    version_guard,
)
from iapflow.secure.guards import updated_fields
from iapflow.secure.history import BATCH, Change, version_of
from iapflow.secure.principal import Principal
from iapflow.wire import check_keys


class Writes(LayerBase):
    """Inserts and updates."""

    async def _new_document(
        self, principal: Principal, collection: str, item: Any, rules: bool = True
    ) -> dict[str, Any]:
        check_writable(collection)
        check_history_write(principal, collection)
        if not isinstance(item, dict):
            raise ApiError("item must be an object")
        doc = dict(item)
        doc.pop("_updatereason", None)
        check_keys(doc)
        client_id = "_id" in doc
        if client_id:
            if not isinstance(doc["_id"], str) or not doc["_id"] or len(doc["_id"]) > 256:
                raise ApiError("_id must be a non-empty string")
        else:
            doc["_id"] = new_id()
        doc["_type"] = str(doc.get("_type") or "unknown").lower()
        acl = clean_acl(doc.get("_acl"))
        await self._name_aces(acl)
        ensure_ace(acl, principal.id, principal.name, FULL_CONTROL)
        ensure_ace(acl, wellknown.ADMINS, "admins", FULL_CONTROL)
        doc["_acl"] = acl
        found = self._rules_for(collection) if rules else None
        if found is not None:
            await found.check_insert(principal, doc, client_id=client_id)
        now = utcnow()
        doc.update(
            _created=now,
            _createdby=principal.name,
            _createdbyid=principal.id,
            _modified=now,
            _modifiedby=principal.name,
            _modifiedbyid=principal.id,
            _version=0,
        )
        return doc

    async def insert_one(
        self, principal: Principal, collection: str, item: Any, *, rules: bool = True
    ) -> Document:
        """Insert one document; the caller gets full control and admins are added.

        ``rules=False`` skips the collection's rules: only for the capability that owns them,
        after its own checks."""
        doc = await self._new_document(principal, collection, item, rules)
        try:
            await self.storage.insert_one(collection, doc)
        except DuplicateKeyError as exc:
            raise duplicate(collection, exc) from None
        await self._changed(collection, "insert", doc)
        return self._scrub(collection, dict(doc))

    async def insert_many(
        self, principal: Principal, collection: str, items: Any
    ) -> list[Document]:
        """Insert several documents, all validated before any is written."""
        if not isinstance(items, list) or not items:
            raise ApiError("items must be a non-empty list of objects")
        docs = [await self._new_document(principal, collection, item) for item in items]
        await self._insert_all(collection, docs)
        return [self._scrub(collection, dict(d)) for d in docs]

    async def replace(
        self, principal: Principal, collection: str, item: Any, *, rules: bool = True
    ) -> Document:
        """Replace a whole document (``updateone`` without ``query``), keeping system fields.

        ``rules=False`` as for :meth:`insert_one`."""
        check_writable(collection)
        check_history_write(principal, collection)
        if not isinstance(item, dict) or not isinstance(item.get("_id"), str):
            raise ApiError("item must be an object with the _id of the document to update")
        check_keys(item)
        item = dict(item)
        reason = update_reason(item.pop("_updatereason", None))
        for _attempt in range(REPLACE_RETRIES):
            original = await self.storage.find_one(
                collection, self._filter(principal, collection, UPDATE, {"_id": item["_id"]})
            )
            if original is None:
                raise ApiError(f"item {item['_id']} not found, or you lack update right on it")
            new = await self._merged(principal, collection, original, dict(item), rules)
            if new is None:
                return self._scrub(collection, original)
            matched = await self._replace_if_unchanged(collection, original, new)
            if matched:
                await self.history.record_changes(collection, [Change(original, new, reason)])
                await self._changed(collection, "update", new)
                return self._scrub(collection, dict(new))
        raise ApiError(f"item {item['_id']} kept changing while it was being updated; try again")

    async def _replace_if_unchanged(
        self, collection: str, original: Document, new: Document
    ) -> int:
        guard_filter: dict[str, Any] = {"_id": original["_id"]}
        if "_version" in original:
            guard_filter["_version"] = original["_version"]
        try:
            return await self.storage.replace_one(collection, guard_filter, new)
        except DuplicateKeyError as exc:
            raise duplicate(collection, exc) from None

    async def _merged(
        self,
        principal: Principal,
        collection: str,
        original: Document,
        item: dict[str, Any],
        rules: bool = True,
    ) -> Document | None:
        """The new version of ``original`` after replacing it by ``item``, or ``None`` if equal."""
        for key, value in original.items():
            if key.startswith("_") and key not in item:
                item[key] = value
        for key in [k for k, v in item.items() if k.startswith("_") and v is None]:
            del item[key]
        item.pop("_updatereason", None)
        for key in ("_id", "_created", "_createdby", "_createdbyid", "_version"):
            if key in original:
                item[key] = original[key]
            else:
                item.pop(key, None)
        item["_type"] = str(item.get("_type") or "unknown").lower()
        acl = clean_acl(item.get("_acl"))
        await self._name_aces(acl)
        ensure_ace(acl, wellknown.ADMINS, "admins", FULL_CONTROL)
        item["_acl"] = acl
        found = self._rules_for(collection) if rules else None
        if found is not None:
            await found.check_replace(principal, original, item)
        if (
            not principal.is_admin
            and not has_right(principal, item, UPDATE)
            and item["_id"] != principal.id
        ):
            raise AccessDenied("the new _acl would take away your own update right")
        if same(content(original), content(item)):
            return None
        item["_version"] = int(original.get("_version", 0)) + 1
        item.update(_modified=utcnow(), _modifiedby=principal.name, _modifiedbyid=principal.id)
        return item

    def _operator_update(
        self, principal: Principal, collection: str, update: Any
    ) -> tuple[dict[str, Any], str | None]:
        """The update operators to run (with the system fields) and the ``_updatereason``."""
        check_writable(collection)
        check_history_write(principal, collection)
        if isinstance(update, list):
            raise ApiError("pipeline-style updates are not supported; use update operators")
        if not isinstance(update, dict) or not update:
            raise ApiError('item must be an object of update operators like {"$set": {...}}')
        if not all(isinstance(k, str) and k.startswith("$") for k in update):
            raise ApiError("with query, item must hold only update operators ($set, $inc, ...)")
        self._check_input(principal, update)
        for op, fields in update.items():
            if not isinstance(fields, dict):
                raise ApiError(f"{op} takes an object of fields")
        protected = sorted(updated_fields(update) & set(SYSTEM_FIELDS))
        if protected:
            raise AccessDenied(
                f"update operators may not change {', '.join(protected)}; "
                "change _acl with a full update of the document"
            )
        final = {op: dict(fields) for op, fields in update.items()}
        reason = update_reason(final.get("$set", {}).pop("_updatereason", None))
        final.setdefault("$set", {}).update(
            _modified=utcnow(), _modifiedby=principal.name, _modifiedbyid=principal.id
        )
        final.setdefault("$inc", {})["_version"] = 1
        found = self._rules_for(collection)
        if found is not None:
            found.check_update(principal, final)
        return final, reason

    async def _apply_update(
        self, collection: str, selector: dict[str, Any], update: dict[str, Any]
    ) -> Document | None:
        try:
            return await self.storage.update_one(collection, selector, update)
        except DuplicateKeyError as exc:
            raise duplicate(collection, exc) from None

    async def _settle(
        self, collection: str, before: Document, after: Document, reason: str | None
    ) -> bool:
        """Record an operator update of ``before`` into ``after``. An update that changed
        nothing but the version is taken back (``False``): no new version, no history."""
        if version_of(after) == version_of(before) + 1 and same(content(before), content(after)):
            undo = {"_id": after["_id"], "_version": after.get("_version")}
            if await self.storage.replace_one(collection, undo, before):
                return False
        await self.history.record_changes(collection, [Change(before, after, reason)])
        return True

    async def update_one(
        self, principal: Principal, collection: str, query: dict[str, Any], update: Any
    ) -> Document | None:
        """Apply update operators to the first document matching ``query`` the caller may update.

        In a collection with history, the document is read first and updated only if it is
        still that version, so the history records exactly this change; an update that
        changes nothing is taken back and the unchanged document returned.
        """
        self._check_filter(principal, collection, query)
        final, reason = self._operator_update(principal, collection, update)
        selector = self._filter(principal, collection, UPDATE, query)
        if not self.history.tracked(collection):
            doc = await self._apply_update(collection, selector, final)
            if doc is not None:
                await self._changed(collection, "update", doc)
                doc = self._scrub(collection, doc)
            return doc
        for _attempt in range(UPDATE_RETRIES):
            before = await self.storage.find_one(collection, selector)
            if before is None:
                return None
            after = await self._apply_update(
                collection, fold(selector, version_guard(before)), final
            )
            if after is None:
                continue  # changed by someone else in between: read it again
            if not await self._settle(collection, before, after, reason):
                return self._scrub(collection, before)
            await self._changed(collection, "update", after)
            return self._scrub(collection, after)
        raise ApiError("the document kept changing while it was being updated; try again")

    async def update_many(
        self, principal: Principal, collection: str, query: dict[str, Any], update: Any
    ) -> tuple[int, int]:
        """Apply update operators to every matching document the caller may update.

        In a collection with history, the matches are updated :data:`BATCH` at a time, each
        batch read before and after so that every changed document gets its history record;
        documents the update did not change are taken back and not counted as modified.
        """
        self._check_filter(principal, collection, query)
        final, reason = self._operator_update(principal, collection, update)
        selector = self._filter(principal, collection, UPDATE, query)
        if not self.history.tracked(collection):
            try:
                counts = await self.storage.update_many(collection, selector, final)
            except DuplicateKeyError as exc:
                raise duplicate(collection, exc) from None
        else:
            counts = await self._update_tracked(collection, selector, final, reason)
        if counts[1]:
            await self._on_bulk_change(collection)
        return counts

    async def _update_tracked(
        self,
        collection: str,
        selector: dict[str, Any],
        update: dict[str, Any],
        reason: str | None,
    ) -> tuple[int, int]:
        found = await self.storage.find(collection, selector, projection={"_id": 1})
        ids = [d["_id"] for d in found]
        matched = modified = 0
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            befores = await self.storage.find(collection, fold(selector, {"_id": {"$in": chunk}}))
            if not befores:
                continue
            by_id = {doc_key(b["_id"]): b for b in befores}
            exact = fold(selector, {"_id": {"$in": [b["_id"] for b in befores]}})
            try:
                count, _ = await self.storage.update_many(collection, exact, update)
            except DuplicateKeyError as exc:
                raise duplicate(collection, exc) from None
            matched += count
            afters = await self.storage.find(
                collection, {"_id": {"$in": [b["_id"] for b in befores]}}
            )
            changes = []
            for after in afters:
                before = by_id.get(doc_key(after["_id"]))
                if before is None or version_of(after) == version_of(before):
                    continue  # not matched any more when the update ran
                if version_of(after) == version_of(before) + 1 and same(
                    content(before), content(after)
                ):
                    undo = {"_id": after["_id"], "_version": after.get("_version")}
                    if await self.storage.replace_one(collection, undo, before):
                        continue
                changes.append(Change(before, after, reason))
            modified += len(changes)
            await self.history.record_changes(collection, changes)
        return matched, modified

    async def insert_or_update(
        self, principal: Principal, collection: str, item: Any, uniqeness: Any
    ) -> Document:
        """Insert ``item``, or replace the one readable document with the same unique fields."""
        if not isinstance(item, dict):
            raise ApiError("item must be an object")
        fields = uniqueness_fields(uniqeness)
        query: dict[str, Any] = {}
        for field in fields:
            if field not in item:
                if field == "_id" and fields == ["_id"]:
                    return await self.insert_one(principal, collection, item)
                raise ApiError(f"uniqeness field {field!r} is missing from item")
            query[field] = item[field]
        self._check_filter(principal, collection, query)
        lock = self._upsert_locks.setdefault(collection, asyncio.Lock())
        async with lock:
            found = await self.storage.find(
                collection, self._filter(principal, collection, READ, query), limit=2
            )
            if len(found) > 1:
                raise ApiError(f"uniqeness {','.join(fields)} matches more than one document")
            if not found:
                return await self.insert_one(principal, collection, item)
            return await self.replace(principal, collection, dict(item, _id=found[0]["_id"]))
