"""The secure data layer: the only code that talks to storage.

Every read, update and delete is narrowed by the caller's ACL filter; every write sets the
system fields (``_type``, ``_created*``, ``_modified*``, ``_version``) and a clean ``_acl``,
and every change is recorded in ``<collection>_hist`` (:mod:`iapflow.data.history`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from iapflow import wellknown
from iapflow.data import users
from iapflow.data.delta import same
from iapflow.data.history import BATCH, Change, History, history_collection, version_of
from iapflow.data.pipeline import PipelineSecurer, parse_pipeline
from iapflow.data.query import collection_name, guard, guard_secret_holder, updated_fields
from iapflow.data.rules import CollectionRules, RuleSet
from iapflow.errors import AccessDenied, ApiError, DuplicateKeyError, StorageError
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow.security import bounds
from iapflow.security.acl import (
    DELETE,
    FULL_CONTROL,
    READ,
    UPDATE,
    access_filter,
    acl_condition,
    acl_field,
    clean_acl,
    ensure_ace,
    fold,
    has_right,
)
from iapflow.security.principal import Principal
from iapflow.storage import Document, Filter, Storage

# Collections only the server manages: clients may not create or drop them (OpenFlow's list).
RESERVED_COLLECTIONS = frozenset(
    {
        "git",
        "workflow",
        "entities",
        "config",
        "audit",
        "jslog",
        "openrpa",
        "nodered",
        "openrpa_instances",
        "forms",
        "workflow_instances",
        "users",
        users.TOMBSTONES,
    }
)
SYSTEM_FIELDS = (
    "_id",
    "_acl",
    "_created",
    "_createdby",
    "_createdbyid",
    "_modified",
    "_modifiedby",
    "_modifiedbyid",
    "_version",
)
_REPLACE_RETRIES = 5
# Operator updates ($inc counters...) meet more contention: each retry is one cheap read.
_UPDATE_RETRIES = 50
# Fields every write sets; a change of nothing else is no change.
_WRITE_STAMP = ("_modified", "_modifiedby", "_modifiedbyid", "_version")

ChangeObserver = Callable[[str, str, dict[str, Any]], Awaitable[None]]
PrincipalResolver = Callable[[str], Awaitable[list[str] | None]]


class DataLayer:
    """Secure document operations for one storage backend."""

    def __init__(
        self,
        storage: Storage,
        *,
        bcrypt_rounds: int,
        on_users_changed: Callable[[], None],
        on_change: ChangeObserver,
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
        self._on_users_changed = on_users_changed
        self._on_change = on_change
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

    # -- filters --------------------------------------------------------------------------------

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

    # -- reads ----------------------------------------------------------------------------------

    async def query(
        self,
        principal: Principal,
        collection: str,
        query: dict[str, Any],
        *,
        projection: dict[str, Any] | None = None,
        top: int = 100,
        skip: int = 0,
        orderby: list[tuple[str, int]] | None = None,
        queryas: Any = None,
    ) -> list[Document]:
        """Documents of ``collection`` matching ``query`` that the caller may read."""
        self._check_filter(principal, collection, query, projection)
        if orderby:
            bounds.check_sort(orderby)
            self._check_input(principal, {field: 1 for field, _direction in orderby})
        final = self._filter(
            principal, collection, READ, await self._queryas(collection, query, queryas)
        )
        docs = await self.storage.find(
            collection,
            final,
            projection=projection,
            sort=orderby,
            skip=skip,
            limit=top,
            max_time_ms=self.max_time_ms,
        )
        return [self._scrub(collection, d) for d in docs]

    async def count(
        self, principal: Principal, collection: str, query: dict[str, Any], queryas: Any = None
    ) -> int:
        """How many documents of ``collection`` match ``query`` and are readable."""
        self._check_filter(principal, collection, query)
        final = self._filter(
            principal, collection, READ, await self._queryas(collection, query, queryas)
        )
        return await self.storage.count(collection, final, max_time_ms=self.max_time_ms)

    async def distinct(
        self,
        principal: Principal,
        collection: str,
        field: str,
        query: dict[str, Any],
        queryas: Any = None,
    ) -> list[Any]:
        """Distinct values of ``field`` among readable matching documents."""
        self._check_filter(principal, collection, query)
        self._check_input(principal, {field: 1})
        final = self._filter(
            principal, collection, READ, await self._queryas(collection, query, queryas)
        )
        return await self.storage.distinct(collection, field, final, max_time_ms=self.max_time_ms)

    async def aggregate(
        self, principal: Principal, collection: str, pipeline: Any, queryas: Any = None
    ) -> list[Document]:
        """Run a pipeline over readable documents; joined collections are ACL-filtered too."""
        stages = parse_pipeline(pipeline)
        bounds.check_pipeline(stages)
        self._check_input(principal, stages, "the pipeline")
        secured = PipelineSecurer(principal, collection_name).secure(collection, stages)
        if queryas not in (None, ""):
            secured.insert(0, {"$match": await self._queryas(collection, {}, queryas)})
        return await self.storage.aggregate(collection, secured, max_time_ms=self.max_time_ms)

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

    # -- inserts --------------------------------------------------------------------------------

    async def _new_document(
        self, principal: Principal, collection: str, item: Any, rules: bool = True
    ) -> dict[str, Any]:
        _check_writable(collection)
        _check_history_write(principal, collection)
        if not isinstance(item, dict):
            raise ApiError("item must be an object")
        doc = dict(item)
        doc.pop("_updatereason", None)
        self._check_keys(doc)
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

    async def _name_aces(self, acl: list[dict[str, Any]]) -> None:
        for ace in acl:
            if not ace.get("name"):
                ace["name"] = await self._role_name(ace["_id"]) or ""

    @staticmethod
    def _check_keys(value: Any, depth: int = 0) -> None:
        if depth > 64:
            raise ApiError("item is nested deeper than 64 levels")
        if isinstance(value, dict):
            for key, inner in value.items():
                if not isinstance(key, str) or key.startswith("$") or "\x00" in key:
                    raise ApiError(
                        f"field name {str(key)[:60]!r} is not allowed (no leading $, no NUL)"
                    )
                DataLayer._check_keys(inner, depth + 1)
        elif isinstance(value, list):
            for inner in value:
                DataLayer._check_keys(inner, depth + 1)

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

    # -- updates --------------------------------------------------------------------------------

    async def replace(
        self, principal: Principal, collection: str, item: Any, *, rules: bool = True
    ) -> Document:
        """Replace a whole document (``updateone`` without ``query``), keeping system fields.

        ``rules=False`` as for :meth:`insert_one`."""
        _check_writable(collection)
        _check_history_write(principal, collection)
        if not isinstance(item, dict) or not isinstance(item.get("_id"), str):
            raise ApiError("item must be an object with the _id of the document to update")
        self._check_keys(item)
        item = dict(item)
        reason = _reason(item.pop("_updatereason", None))
        for _attempt in range(_REPLACE_RETRIES):
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
        if same(_content(original), _content(item)):
            return None
        item["_version"] = int(original.get("_version", 0)) + 1
        item.update(_modified=utcnow(), _modifiedby=principal.name, _modifiedbyid=principal.id)
        return item

    def _operator_update(
        self, principal: Principal, collection: str, update: Any
    ) -> tuple[dict[str, Any], str | None]:
        """The update operators to run (with the system fields) and the ``_updatereason``."""
        _check_writable(collection)
        _check_history_write(principal, collection)
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
        reason = _reason(final.get("$set", {}).pop("_updatereason", None))
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
        if version_of(after) == version_of(before) + 1 and same(_content(before), _content(after)):
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
        for _attempt in range(_UPDATE_RETRIES):
            before = await self.storage.find_one(collection, selector)
            if before is None:
                return None
            after = await self._apply_update(
                collection, fold(selector, _version_guard(before)), final
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
        if collection == users.COLLECTION:
            self._on_users_changed()
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
            by_id = {_key(b["_id"]): b for b in befores}
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
                before = by_id.get(_key(after["_id"]))
                if before is None or version_of(after) == version_of(before):
                    continue  # not matched any more when the update ran
                if version_of(after) == version_of(before) + 1 and same(
                    _content(before), _content(after)
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
        fields = _uniqueness_fields(uniqeness)
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

    # -- deletes --------------------------------------------------------------------------------

    def _delete_filter(
        self, principal: Principal, collection: str, query: dict[str, Any], rules: bool = True
    ) -> dict[str, Any]:
        _check_writable(collection, delete=True)
        _check_history_write(principal, collection)
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
        final = self._delete_filter(principal, collection, {"_id": doc_id}, rules)
        doc = await self.storage.find_one(collection, final)
        if doc is None:
            raise ApiError(f"item {doc_id} not found, or you lack delete right on it")
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
        if collection == users.COLLECTION:
            self._on_users_changed()
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
                kept = {_key(d["_id"]) for d in left}
                gone = [d for d in batch if _key(d["_id"]) not in kept]
            await self.history.record_deletes(collection, gone, principal.name, principal.id)
            if found is not None and gone:
                await found.after_delete(principal, gone)
            total += deleted
            if deleted == 0 or len(batch) < BATCH:
                return total

    # -- collections ----------------------------------------------------------------------------

    async def list_collections(self, principal: Principal, include_hist: bool) -> list[Document]:
        """Collections, hiding history and GridFS chunks unless asked."""
        found = await self.storage.list_collections()
        result = []
        for info in sorted(found, key=lambda c: c["name"]):
            name = info["name"]
            if name.startswith("system."):
                continue
            if not include_hist and (name.endswith("_hist") or name.endswith(".chunks")):
                continue
            result.append(info)
        return result

    def _check_admin_collection(self, principal: Principal, name: str, action: str) -> None:
        if not principal.is_admin:
            raise AccessDenied(f"only admins can {action} collections")
        base = name[: -len("_hist")] if name.endswith("_hist") else name
        if base in RESERVED_COLLECTIONS or name.startswith("fs."):
            raise AccessDenied(f"{name!r} is a reserved collection and cannot be {action}d here")

    async def create_collection(
        self, principal: Principal, name: str, options: dict[str, Any]
    ) -> None:
        """Create a collection (admins; reserved names refused)."""
        self._check_admin_collection(principal, name, "create")
        await self.storage.create_collection(name, options)

    async def drop_collection(self, principal: Principal, name: str) -> None:
        """Drop a collection and its history (admins; reserved names refused)."""
        self._check_admin_collection(principal, name, "drop")
        await self.storage.drop_collection(name)
        await self.storage.drop_collection(history_collection(name))
        self.history.forget(name)

    # -- history --------------------------------------------------------------------------------

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
        _check_writable(collection)
        _check_history_write(principal, collection)
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
        _check_writable(collection)
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

    # -- notifications --------------------------------------------------------------------------

    async def _changed(self, collection: str, operation: str, doc: Document) -> None:
        if collection == users.COLLECTION:
            self._on_users_changed()
        await self._on_change(collection, operation, doc)


class ServiceWrites:
    """Storage access for a capability's own service, after it checked the caller's rights the
    way its commands promise (work items: invoke on the queue). Documents are written as
    given, without ACL filters or collection rules; observers still hear of every change.
    Nothing else in iapflow reaches storage past the data layer."""

    def __init__(self, layer: DataLayer) -> None:
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

    async def create_index(self, collection: str, keys: list[tuple[str, int | str]]) -> str:
        """Ensure an index a service's queries need."""
        return await self._storage.create_index(collection, keys)

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


def duplicate(collection: str, exc: DuplicateKeyError) -> ApiError:
    """The client's error for a write a unique index refused: which fields, never the value,
    the other document or the store's own names. That an ``_id`` is taken is said whether or
    not the caller may read the document holding it: ids are not secret."""
    fields = " and ".join(exc.fields) if exc.fields else "unique fields"
    return ApiError(f"duplicate key: {collection} already has a document with the same {fields}")


def _uniqueness_fields(value: Any) -> list[str]:
    if value in (None, ""):
        return ["_id"]
    if isinstance(value, str):
        fields = [f.strip() for f in value.split(",") if f.strip()]
    elif isinstance(value, list) and all(isinstance(f, str) for f in value):
        fields = value
    else:
        raise ApiError("uniqeness must be a comma-separated list of field names")
    if not fields or any(f.startswith("$") for f in fields):
        raise ApiError("uniqeness must name one or more fields")
    return fields


def _reason(value: Any) -> str | None:
    """``_updatereason`` as it goes into the history record."""
    if value is None or value == "":
        return None
    return str(value)[:1000]


def _content(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` without the fields every write sets."""
    return {k: v for k, v in doc.items() if k not in _WRITE_STAMP}


def _version_guard(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A filter that matches ``doc`` only while it is still that version."""
    if "_version" in doc:
        return {"_id": doc["_id"], "_version": doc["_version"]}
    return {"_id": doc["_id"], "_version": {"$exists": False}}


def _key(value: Any) -> Any:
    """A hashable key for a document id (ids are strings, or ObjectIds from older data)."""
    return value if isinstance(value, str) else (type(value).__name__, str(value))


def _check_history_write(principal: Principal, collection: str) -> None:
    """History is written by the server: only admins may change it (to import or prune)."""
    if collection.endswith("_hist") and not principal.is_admin:
        raise AccessDenied(f"{collection} is history, written by the server; it cannot be changed")


def _check_writable(collection: str, delete: bool = False) -> None:
    """File store collections keep their ACL in ``metadata`` and their bytes in chunks: the
    document commands must not write them half-way. The audit log is written by the server
    only, and never changed (admins may delete entries)."""
    if collection == "audit" and not delete:
        raise AccessDenied("the audit log is written by the server and cannot be changed")
    if collection == users.TOMBSTONES:
        raise AccessDenied(
            f"{collection} keeps the ids of deleted users and roles; only the server writes it"
        )
    if collection.endswith((".files", ".chunks")):
        raise AccessDenied(
            f"{collection} belongs to the file store; change files with the file commands"
        )
