"""Document history: every version of a document in ``<collection>_hist``.

The data layer calls :class:`History` after each write it made. A history record is::

    {_id, id, _version, _type, name, _acl, _created*, _modified*, reason?,
     item | delta, _deleted?, _deletedby?, _deletedbyid?, _restored?...}

``item`` is a full copy of the document at ``_version`` (a snapshot); ``delta`` is the
:mod:`iapflow.secure.delta` list of operations that turns the previous version into this one.
Snapshots are written for version 0 (when the document first changes), every
``snapshot_every`` versions, whenever the record of the previous version is missing (so a chain
always starts from a snapshot), and on delete (with ``_deleted*``). ``_acl`` is the document's
ACL at that version, so reading history follows the document's own ACL. Records of one
document are told apart from those of an earlier document with the same id by ``_created``.

Writing history never fails the write it follows: the document is already stored, so a failed
history write is logged, and the next change of that document starts again from a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iapflow.contracts.storage import Document, Filter, Storage
from iapflow.errors import ApiError, StorageError
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow.secure.delta import Delta, DeltaError, apply, diff

log = logging.getLogger("iapflow.history")

SUFFIX = "_hist"
DEFAULT_SKIP_COLLECTIONS = (
    "audit",
    "oauthtokens",
    "openrpa_instances",
    "workflow_instances",
    "workitems",
    "mailhist",
)
# Fields that never go into history, per collection.
SECRET_FIELDS: dict[str, tuple[str, ...]] = {"users": ("passwordhash",)}
_STAMP_FIELDS = (
    "_created",
    "_createdby",
    "_createdbyid",
    "_modified",
    "_modifiedby",
    "_modifiedbyid",
)
# How many documents a bulk update or delete reads, changes and records at a time.
BATCH = 500


def history_collection(collection: str) -> str:
    """The name of the collection that keeps ``collection``'s history."""
    return collection + SUFFIX


def never_tracked(collection: str) -> bool:
    """History collections and the file store never get history of their own."""
    return (
        collection.endswith(SUFFIX)
        or collection.startswith("fs.")
        or collection.endswith((".files", ".chunks"))
    )


def version_of(doc: Mapping[str, Any]) -> int:
    """The document's ``_version`` (0 when it has none, or a value that is not a number)."""
    value = doc.get("_version", 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


@dataclass(frozen=True)
class Change:
    """One document before and after a write of the data layer."""

    before: Document
    after: Document
    reason: str | None = None


class HistoryError(ApiError):
    """A version cannot be rebuilt: it is not in the history, or the history is damaged."""


class History:
    """Writes and reads ``<collection>_hist`` for one storage backend."""

    def __init__(
        self,
        storage: Storage,
        *,
        snapshot_every: int = 1000,
        skip_collections: Iterable[str] = DEFAULT_SKIP_COLLECTIONS,
    ) -> None:
        self.storage = storage
        self.snapshot_every = max(1, snapshot_every)
        self.skip_collections = frozenset(skip_collections)
        self._indexed: set[str] = set()

    def tracked(self, collection: str) -> bool:
        """Whether changes to ``collection`` are recorded."""
        return collection not in self.skip_collections and not never_tracked(collection)

    # -- indexes --------------------------------------------------------------------------------

    async def ensure_index(self, collection: str) -> None:
        """Ensure the indexes of ``collection``'s history (once per process)."""
        hist = history_collection(collection)
        if hist in self._indexed:
            return
        await self.storage.create_index(hist, [("id", 1), ("_version", -1)])
        await self.storage.create_index(hist, [("_deleted", -1)], sparse=True)
        self._indexed.add(hist)

    async def ensure_indexes(self) -> list[str]:
        """Ensure the indexes of every history collection in the store; return their names."""
        names = sorted(
            info["name"]
            for info in await self.storage.list_collections()
            if str(info.get("name", "")).endswith(SUFFIX)
        )
        for hist in names:
            self._indexed.discard(hist)
            await self.ensure_index(hist[: -len(SUFFIX)])
        return names

    def forget(self, collection: str) -> None:
        """``collection``'s history was dropped: ensure its indexes again on the next write."""
        self._indexed.discard(history_collection(collection))

    # -- writing --------------------------------------------------------------------------------

    @staticmethod
    def visible(collection: str, doc: Mapping[str, Any]) -> Document:
        """``doc`` without the fields that never go into history (password hashes)."""
        secret = SECRET_FIELDS.get(collection, ())
        return {key: value for key, value in doc.items() if key not in secret}

    @staticmethod
    def _record(doc: Mapping[str, Any], reason: str | None) -> Document:
        record: Document = {
            "_id": new_id(),
            "id": str(doc.get("_id")),
            "_version": version_of(doc),
            "_type": doc.get("_type"),
            "_acl": [dict(ace) if isinstance(ace, Mapping) else ace for ace in _acl(doc)],
        }
        if "name" in doc:
            record["name"] = doc["name"]
        for field in _STAMP_FIELDS:
            if field in doc:
                record[field] = doc[field]
        if reason:
            record["reason"] = reason
        return record

    def _snapshot(self, doc: Document, reason: str | None = None) -> Document:
        return {**self._record(doc, reason), "item": doc}

    async def _write(self, collection: str, records: list[Document]) -> None:
        if not records:
            return
        try:
            await self.ensure_index(collection)
            await self.storage.insert_many(history_collection(collection), records)
        except StorageError as exc:
            ids = sorted({str(r["id"]) for r in records})[:5]
            log.warning("could not write history of %s %s: %s", collection, ids, exc)

    async def _recorded(self, collection: str, docs: Sequence[Document]) -> set[tuple[str, int]]:
        """Which of ``docs`` already have a record of their current version (same lifetime)
        that iapflow can build on: a snapshot or one of its own deltas (not a delta imported
        from OpenFlow, whose format it cannot apply)."""
        ids = sorted({str(d.get("_id")) for d in docs})
        versions = sorted({version_of(d) for d in docs})
        try:
            found = await self.storage.find(
                history_collection(collection),
                {"id": {"$in": ids}, "_version": {"$in": versions}},
                projection={"id": 1, "_version": 1, "_created": 1, "delta": 1},
            )
        except StorageError as exc:
            log.warning("could not read history of %s: %s", collection, exc)
            return set()
        created = {(str(d.get("_id")), version_of(d)): d.get("_created") for d in docs}
        return {
            (str(r.get("id")), version_of(r))
            for r in found
            if (str(r.get("id")), version_of(r)) in created
            and created[(str(r.get("id")), version_of(r))] == r.get("_created")
            and isinstance(r.get("delta", []), list)
        }

    async def record_changes(self, collection: str, changes: Sequence[Change]) -> None:
        """Record each change as a delta (or a snapshot, when the rule says so).

        ``before`` must be the stored document the write started from and ``after`` the
        document as stored by it. Changes whose versions are not consecutive (another writer
        came in between) are recorded as a snapshot of ``after``.
        """
        if not changes or not self.tracked(collection):
            return
        befores = [self.visible(collection, c.before) for c in changes]
        recorded = await self._recorded(collection, befores)
        records: list[Document] = []
        for change, before in zip(changes, befores, strict=True):
            after = self.visible(collection, change.after)
            old, new = version_of(before), version_of(after)
            if (str(before.get("_id")), old) not in recorded:
                records.append(self._snapshot(before))
            if new == old + 1 and new % self.snapshot_every != 0:
                records.append({**self._record(after, change.reason), "delta": diff(before, after)})
            else:
                records.append(self._snapshot(after, change.reason))
        await self._write(collection, records)

    async def record_deletes(
        self, collection: str, docs: Sequence[Document], by_name: str, by_id: str
    ) -> None:
        """Keep a full copy of each deleted document, marked ``_deleted*``."""
        if not docs or not self.tracked(collection):
            return
        now = utcnow()
        records = [
            {
                **self._snapshot(self.visible(collection, doc)),
                "_deleted": now,
                "_deletedby": by_name,
                "_deletedbyid": by_id,
            }
            for doc in docs
        ]
        await self._write(collection, records)

    async def mark_restored(
        self, collection: str, record_id: Any, by_name: str, by_id: str
    ) -> None:
        """Mark a deleted copy as restored, so it is no longer listed as deleted."""
        await self.storage.update_one(
            history_collection(collection),
            {"_id": record_id},
            {"$set": {"_restored": utcnow(), "_restoredby": by_name, "_restoredbyid": by_id}},
        )

    # -- reading --------------------------------------------------------------------------------

    async def last_deleted(self, collection: str, filter: Filter) -> Document | None:
        """The most recently deleted copy matching ``filter`` (already ACL-filtered)."""
        found = await self.storage.find(
            history_collection(collection), filter, sort=[("_deleted", -1)], limit=1
        )
        return found[0] if found else None

    async def deleted(
        self, collection: str, filter: Filter, *, top: int, skip: int
    ) -> list[Document]:
        """Deleted copies matching ``filter`` (already ACL-filtered), newest first."""
        return await self.storage.find(
            history_collection(collection), filter, sort=[("_deleted", -1)], skip=skip, limit=top
        )

    async def rebuild(self, collection: str, doc_id: str, created: Any, version: int) -> Document:
        """The document ``doc_id`` (of the lifetime that began at ``created``) at ``version``:
        the last snapshot at or before it, with the deltas after that applied in order."""
        hist = history_collection(collection)
        same_doc: Document = {"id": doc_id, "_created": created}
        bases = await self.storage.find(
            hist,
            {**same_doc, "_version": {"$lte": version}, "item": {"$exists": True}},
            sort=[("_version", -1)],
            limit=1,
        )
        if not bases or not isinstance(bases[0].get("item"), dict):
            raise HistoryError(
                f"version {version} of {doc_id} is not in the history of {collection}"
            )
        result: Document = bases[0]["item"]
        expected = version_of(bases[0]) + 1
        if expected <= version:
            records = await self.storage.find(
                hist,
                {
                    **same_doc,
                    "_version": {"$gt": expected - 1, "$lte": version},
                    "delta": {"$exists": True},
                },
                sort=[("_version", 1)],
            )
            for record in records:
                number = version_of(record)
                if number < expected:
                    continue  # two writers recorded the same version
                if number > expected:
                    break
                result = _apply_record(result, record, collection, doc_id)
                expected += 1
        if expected != version + 1:
            raise HistoryError(
                f"version {expected} of {doc_id} is missing from the history of {collection}, "
                f"so version {version} cannot be rebuilt"
            )
        return result


def _acl(doc: Mapping[str, Any]) -> list[Any]:
    acl = doc.get("_acl")
    return acl if isinstance(acl, list) else []


def _apply_record(result: Document, record: Document, collection: str, doc_id: str) -> Document:
    delta: Delta | Any = record.get("delta")
    where = f"version {version_of(record)} of {doc_id} in {collection}_hist"
    if isinstance(delta, dict):
        raise HistoryError(
            f"{where} holds a delta in another format (OpenFlow's jsondiffpatch?), "
            "which iapflow cannot apply"
        )
    try:
        rebuilt = apply(result, delta, in_place=True)
    except DeltaError as exc:
        raise HistoryError(f"{where} does not apply: {exc}") from None
    if not isinstance(rebuilt, dict):
        raise HistoryError(f"{where} does not yield a document")
    return rebuilt
