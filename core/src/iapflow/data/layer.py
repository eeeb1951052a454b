"""The secure data layer: the only code that talks to storage.

Every read, update and delete is narrowed by the caller's ACL filter; every write sets the
system fields (``_type``, ``_created*``, ``_modified*``, ``_version``) and a clean ``_acl``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from iapflow import wellknown
from iapflow.data import users
from iapflow.data.pipeline import PipelineSecurer, parse_pipeline
from iapflow.data.query import collection_name, guard, guard_secret_holder, updated_fields
from iapflow.errors import AccessDenied, ApiError, DuplicateKeyError, StorageError
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
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
from iapflow.storage import Document, Storage

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
    ) -> None:
        self.storage = storage
        self._rounds = bcrypt_rounds
        self._on_users_changed = on_users_changed
        self._on_change = on_change
        self._resolve_principal = resolve_principal
        self._role_name = role_name
        self._upsert_locks: dict[str, asyncio.Lock] = {}

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

    def _check_input(self, principal: Principal, value: Any) -> None:
        guard(value, admin=principal.is_admin)

    def _check_filter(
        self,
        principal: Principal,
        collection: str,
        query: Any,
        projection: dict[str, Any] | None = None,
    ) -> None:
        self._check_input(principal, query)
        if projection is not None:
            self._check_input(principal, projection)
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
            self._check_input(principal, {field: 1 for field, _direction in orderby})
        final = self._filter(
            principal, collection, READ, await self._queryas(collection, query, queryas)
        )
        docs = await self.storage.find(
            collection, final, projection=projection, sort=orderby, skip=skip, limit=top
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
        return await self.storage.count(collection, final)

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
        return await self.storage.distinct(collection, field, final)

    async def aggregate(
        self, principal: Principal, collection: str, pipeline: Any, queryas: Any = None
    ) -> list[Document]:
        """Run a pipeline over readable documents; joined collections are ACL-filtered too."""
        stages = parse_pipeline(pipeline)
        self._check_input(principal, stages)
        secured = PipelineSecurer(principal, collection_name).secure(collection, stages)
        if queryas not in (None, ""):
            secured.insert(0, {"$match": await self._queryas(collection, {}, queryas)})
        return await self.storage.aggregate(collection, secured)

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
        self, principal: Principal, collection: str, item: Any
    ) -> dict[str, Any]:
        _check_writable(collection)
        if not isinstance(item, dict):
            raise ApiError("item must be an object")
        doc = dict(item)
        self._check_keys(doc)
        if "_id" in doc:
            if not isinstance(doc["_id"], str) or not doc["_id"] or len(doc["_id"]) > 256:
                raise ApiError("_id must be a non-empty string")
        else:
            doc["_id"] = new_id()
        doc["_type"] = str(doc.get("_type") or "unknown").lower()
        if collection == users.COLLECTION:
            await users.prepare_insert(principal, doc, self._rounds)
        acl = clean_acl(doc.get("_acl"))
        await self._name_aces(acl)
        ensure_ace(acl, principal.id, principal.name, FULL_CONTROL)
        ensure_ace(acl, wellknown.ADMINS, "admins", FULL_CONTROL)
        doc["_acl"] = acl
        if collection == users.COLLECTION:
            users.add_self_ace(doc)
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

    async def insert_one(self, principal: Principal, collection: str, item: Any) -> Document:
        """Insert one document; the caller gets full control and admins are added."""
        doc = await self._new_document(principal, collection, item)
        try:
            await self.storage.insert_one(collection, doc)
        except DuplicateKeyError as exc:
            raise ApiError(f"duplicate key: {exc}") from None
        await self._changed(collection, "insert", doc)
        return self._scrub(collection, dict(doc))

    async def insert_many(
        self, principal: Principal, collection: str, items: Any
    ) -> list[Document]:
        """Insert several documents, all validated before any is written."""
        if not isinstance(items, list) or not items:
            raise ApiError("items must be a non-empty list of objects")
        docs = [await self._new_document(principal, collection, item) for item in items]
        try:
            await self.storage.insert_many(collection, docs)
        except StorageError as exc:
            # Ordered inserts stop at the first failure: take back the ones stored before it.
            await self.storage.delete_many(
                collection, {"$or": [{"_id": d["_id"], "_created": d["_created"]} for d in docs]}
            )
            if isinstance(exc, DuplicateKeyError):
                raise ApiError(f"duplicate key: {exc}") from None
            raise
        for doc in docs:
            await self._changed(collection, "insert", doc)
        return [self._scrub(collection, dict(d)) for d in docs]

    # -- updates --------------------------------------------------------------------------------

    async def replace(self, principal: Principal, collection: str, item: Any) -> Document:
        """Replace a whole document (``updateone`` without ``query``), keeping system fields."""
        _check_writable(collection)
        if not isinstance(item, dict) or not isinstance(item.get("_id"), str):
            raise ApiError("item must be an object with the _id of the document to update")
        self._check_keys(item)
        for _attempt in range(_REPLACE_RETRIES):
            original = await self.storage.find_one(
                collection, self._filter(principal, collection, UPDATE, {"_id": item["_id"]})
            )
            if original is None:
                raise ApiError(f"item {item['_id']} not found, or you lack update right on it")
            new = await self._merged(principal, collection, original, dict(item))
            if new is None:
                return self._scrub(collection, original)
            matched = await self._replace_if_unchanged(collection, original, new)
            if matched:
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
            raise ApiError(f"duplicate key: {exc}") from None

    async def _merged(
        self, principal: Principal, collection: str, original: Document, item: dict[str, Any]
    ) -> Document | None:
        """The new version of ``original`` after replacing it by ``item``, or ``None`` if equal."""
        for key, value in original.items():
            if key.startswith("_") and key not in item:
                item[key] = value
        for key in [k for k, v in item.items() if k.startswith("_") and v is None]:
            del item[key]
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
        if collection == users.COLLECTION:
            await users.prepare_replace(principal, original, item, self._rounds)
            users.add_self_ace(item)
        if (
            not principal.is_admin
            and not has_right(principal, item, UPDATE)
            and item["_id"] != principal.id
        ):
            raise AccessDenied("the new _acl would take away your own update right")
        unchanged = {k: v for k, v in original.items() if not k.startswith("_modified")}
        candidate = {k: v for k, v in item.items() if not k.startswith("_modified")}
        if unchanged == candidate:
            return None
        item["_version"] = int(original.get("_version", 0)) + 1
        item.update(_modified=utcnow(), _modifiedby=principal.name, _modifiedbyid=principal.id)
        return item

    def _operator_update(
        self, principal: Principal, collection: str, update: Any
    ) -> dict[str, Any]:
        _check_writable(collection)
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
        if collection == users.COLLECTION:
            users.check_operator_update(principal, update)
        final = {op: dict(fields) for op, fields in update.items()}
        final.setdefault("$set", {}).update(
            _modified=utcnow(), _modifiedby=principal.name, _modifiedbyid=principal.id
        )
        final.setdefault("$inc", {})["_version"] = 1
        return final

    async def update_one(
        self, principal: Principal, collection: str, query: dict[str, Any], update: Any
    ) -> Document | None:
        """Apply update operators to the first document matching ``query`` the caller may update."""
        self._check_filter(principal, collection, query)
        final = self._operator_update(principal, collection, update)
        try:
            doc = await self.storage.update_one(
                collection, self._filter(principal, collection, UPDATE, query), final
            )
        except DuplicateKeyError as exc:
            raise ApiError(f"duplicate key: {exc}") from None
        if doc is not None:
            await self._changed(collection, "update", doc)
            doc = self._scrub(collection, doc)
        return doc

    async def update_many(
        self, principal: Principal, collection: str, query: dict[str, Any], update: Any
    ) -> tuple[int, int]:
        """Apply update operators to every matching document the caller may update."""
        self._check_filter(principal, collection, query)
        final = self._operator_update(principal, collection, update)
        try:
            counts = await self.storage.update_many(
                collection, self._filter(principal, collection, UPDATE, query), final
            )
        except DuplicateKeyError as exc:
            raise ApiError(f"duplicate key: {exc}") from None
        if collection == users.COLLECTION:
            self._on_users_changed()
        return counts

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
        self, principal: Principal, collection: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        _check_writable(collection, delete=True)
        final = self._filter(principal, collection, DELETE, query)
        if collection == users.COLLECTION:
            protected = sorted(wellknown.WELLKNOWN_IDS | {principal.id})
            final = fold(final, {"_id": {"$nin": protected}})
        return final

    async def delete_one(self, principal: Principal, collection: str, doc_id: Any) -> int:
        """Delete one document by id if the caller has delete right on it."""
        if not isinstance(doc_id, str) or not doc_id:
            raise ApiError("id of the document to delete is required")
        final = self._delete_filter(principal, collection, {"_id": doc_id})
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
            await self._changed(collection, "delete", doc)
        return deleted

    async def delete_many(
        self, principal: Principal, collection: str, query: dict[str, Any]
    ) -> int:
        """Delete every matching document the caller has delete right on."""
        self._check_filter(principal, collection, query)
        deleted = await self.storage.delete_many(
            collection, self._delete_filter(principal, collection, query)
        )
        if collection == users.COLLECTION:
            self._on_users_changed()
        return deleted

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
        await self.storage.drop_collection(name + "_hist")

    # -- notifications --------------------------------------------------------------------------

    async def _changed(self, collection: str, operation: str, doc: Document) -> None:
        if collection == users.COLLECTION:
            self._on_users_changed()
        await self._on_change(collection, operation, doc)


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


def _check_writable(collection: str, delete: bool = False) -> None:
    """File store collections keep their ACL in ``metadata`` and their bytes in chunks: the
    document commands must not write them half-way. The audit log is written by the server
    only, and never changed (admins may delete entries)."""
    if collection == "audit" and not delete:
        raise AccessDenied("the audit log is written by the server and cannot be changed")
    if collection.endswith((".files", ".chunks")):
        raise AccessDenied(
            f"{collection} belongs to the file store; change files with the file commands"
        )
