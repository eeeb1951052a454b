"""Work item queues: OpenFlow's persistent job queues, on top of the secure data layer.

A queue is an ``mq`` document with ``_type: workitemqueue``; its items live in ``workitems``
(``_type: workitem``) and carry a copy of the queue's ``_acl``. Adding, popping, updating and
deleting items needs the invoke right on the queue (deleting needs delete on the item too).

An item goes ``new`` -> ``processing`` (popped) -> ``successful`` | ``failed``. A ``retry``
update sends it back to ``new`` after the queue's ``retrydelay`` until ``maxretries`` attempts
were made; business errors are never retried. A finished item is copied, payload and files,
into the queue's (or the item's own) success or failed queue.

Pops are one atomic find-one-and-update on the store (the lowest ``priority`` among the items
that are ``new`` and due), so concurrent poppers never get the same item. Attached files go
through :mod:`iapflow.builtin.files.service`, with the queue's ACL; an item's copies and its
deletion touch only the files that belong to it.

The service checks the rights its commands promise and then writes through the data layer's
:class:`~iapflow.secure.layer.ServiceWrites`. The generic document commands reach ``workitems``
and work item queues in ``mq`` only past :class:`WorkitemRules` and :class:`QueueRules`: no
item is inserted, moved to another queue, given files or chained elsewhere, and no queue is
changed, except through the work item commands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iapflow import wellknown
from iapflow.builtin.files.content import decode_base64, inflate, pieces
from iapflow.builtin.files.service import secure_files
from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied, ApiError, StorageError
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow.secure.acl import (
    DELETE,
    FULL_CONTROL,
    INVOKE,
    clean_acl,
    ensure_ace,
    has_right,
)
from iapflow.secure.principal import Principal

if TYPE_CHECKING:
    pass

from iapflow.builtin.workitems.parse import (
    DEFAULT_MAXRETRIES,
    DEFAULT_PRIORITY,
    ERROR_TYPES,
    ITEM_KEYS,
    ITEM_TYPE,
    MAX_ITEMS_PER_CALL,
    MQ,
    QUEUE_TYPE,
    TRUE_VALUES,
    UPDATE_STATES,
    WORKITEMS,
    check_file,
    check_name,
    flag,
    parse_payload,
    parse_priority,
    parse_time,
    right_name,
)
from iapflow.builtin.workitems.queues import QueueOps, readable, stamp

log = logging.getLogger("iapflow.workitems")


class WorkitemService(QueueOps):
    """Work item queues (:class:`QueueOps`) and their items for one platform."""

    async def add_items(
        self,
        principal: Principal,
        data: Mapping[str, Any],
        items: list[Any],
    ) -> list[Document]:
        """``addworkitem(s)``: new items in the queue ``data`` names (invoke right needed).

        ``data`` holds the shared fields (queue, ``wipriority``, success/failed targets); each
        of ``items`` its own ``name``, ``payload``, ``priority``, ``nextrun``, ``files``.
        """
        if not items:
            raise ApiError("items must be a non-empty list of work items")
        if len(items) > MAX_ITEMS_PER_CALL:
            raise ApiError(f"at most {MAX_ITEMS_PER_CALL} work items per call")
        queue = await self.queue(principal, data, INVOKE, ITEM_KEYS)
        shared_priority = parse_priority(data.get("wipriority"), DEFAULT_PRIORITY)
        shared = {k: await self._target(principal, data, k) for k in ("success", "failed")}
        now = utcnow()
        default_run = now + dt.timedelta(seconds=float(queue.get("initialdelay") or 0))
        docs: list[Document] = []
        uploads: list[tuple[Document, list[Any]]] = []
        for raw in items:
            if not isinstance(raw, dict):
                raise ApiError("every work item must be an object")
            doc = self._new_item(principal, queue, raw, now)
            doc["priority"] = parse_priority(
                raw.get("priority", raw.get("wipriority")), shared_priority
            )
            doc["nextrun"] = parse_time(raw.get("nextrun")) or default_run
            for kind in ("success", "failed"):
                own = await self._target(principal, raw, kind)
                doc[f"{kind}_wiq"], doc[f"{kind}_wiqid"] = own if own[1] else shared[kind]
            files = raw.get("files")
            if files not in (None, []):
                if not isinstance(files, list):
                    raise ApiError("files must be a list of {filename, file, compressed}")
                for entry in files:
                    check_file(entry)
                uploads.append((doc, files))
            docs.append(doc)
        for doc, files in uploads:
            for entry in files:
                doc["files"].append(await self._save_file(principal, queue, doc, entry))
        try:
            await self.store.insert_many(WORKITEMS, docs)
        except (ApiError, StorageError):
            for doc in docs:
                await secure_files(self.platform).remove(
                    await secure_files(self.platform).attached(doc)
                )
            raise
        if self.nudge is not None:
            self.nudge(queue)
        return docs

    def _new_item(
        self, principal: Principal, queue: Document, raw: Mapping[str, Any], now: dt.datetime
    ) -> Document:
        name = raw.get("name")
        payload = parse_payload(raw.get("payload"))
        if name in (None, ""):
            name = payload.get("name") if isinstance(payload.get("name"), str) else ""
        name = check_name(name, "name of the work item") if name else "New work item"
        acl = clean_acl(queue.get("_acl"))
        ensure_ace(acl, wellknown.ADMINS, "admins", FULL_CONTROL)
        return {
            "_id": new_id(),
            "_type": ITEM_TYPE,
            "name": name,
            "wiq": queue["name"],
            "wiqid": queue["_id"],
            "payload": payload,
            "state": "new",
            "retries": 0,
            "lastrun": None,
            "userid": "",
            "username": "",
            "errormessage": "",
            "errortype": "",
            "errorsource": "",
            "files": [],
            "_acl": acl,
            "_created": now,
            "_createdby": principal.name,
            "_createdbyid": principal.id,
            **stamp(principal, now),
            "_version": 0,
        }

    async def _save_file(
        self, principal: Principal, queue: Document, item: Document, entry: Mapping[str, Any]
    ) -> dict[str, Any]:
        files = secure_files(self.platform)
        limit = files.max_bytes
        if entry.get("compressed") in TRUE_VALUES:
            packed = decode_base64(entry.get("file"), limit, limit // 100 + 1024)
            chunks = pieces(inflate(packed, limit))
        else:
            chunks = pieces(decode_base64(entry.get("file"), limit))
        stored = await files.save(
            principal,
            chunks,
            filename=entry.get("filename"),
            content_type=entry.get("mimeType") or entry.get("mimetype"),
            metadata={"_acl": queue.get("_acl") or []},
            workitem=_owner(item, queue),
        )
        filename = str(entry.get("filename"))
        return {"name": filename, "filename": filename, "_id": stored["_id"]}

    async def _copy_file(
        self, principal: Principal, queue: Document, item: Document, source: Document
    ) -> dict[str, Any] | None:
        """A copy of ``source`` (a file that belongs to the finished item) for ``item``."""
        files = secure_files(self.platform)
        filename = str(source.get("filename") or "file")
        stored = await files.copy(
            principal,
            source,
            filename=filename,
            metadata={"_acl": queue.get("_acl") or []},
            workitem=_owner(item, queue),
        )
        if stored is None:
            return None
        return {"name": filename, "filename": filename, "_id": stored["_id"]}

    async def pop(self, principal: Principal, data: Mapping[str, Any]) -> Document | None:
        """``popworkitem``: the lowest-priority due ``new`` item of the queue, now
        ``processing`` and owned by the caller; ``None`` when nothing is waiting."""
        queue = await self.queue(principal, data, INVOKE, ITEM_KEYS)
        # Pops of one queue take turns in this process: the store would otherwise see them
        # all race for the same first item (write conflicts it settles slowly). The store's
        # atomic update still keeps pops from several server processes apart.
        key = str(queue["_id"])
        entry = self._pop_locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._pop(principal, queue)
        finally:
            entry[1] -= 1
            if not entry[1]:
                self._pop_locks.pop(key, None)

    async def _pop(self, principal: Principal, queue: Document) -> Document | None:
        now = utcnow()
        return await self.store.find_one_and_update(
            WORKITEMS,
            {"wiqid": queue["_id"], "state": "new", "nextrun": {"$lte": now}},
            {
                "$set": {
                    "state": "processing",
                    "lastrun": now,
                    "userid": principal.id,
                    "username": principal.name,
                    **stamp(principal, now),
                },
                "$unset": {"nextrun": ""},
                "$inc": {"_version": 1},
            },
            sort=[("priority", 1), ("nextrun", 1)],
        )

    async def _item(self, principal: Principal, item_id: Any, rights: int) -> tuple[Document, Any]:
        """The item ``item_id`` and its queue (``None`` if gone), with ``rights`` checked on the
        queue (or on the item when its queue is gone)."""
        if not isinstance(item_id, str) or not item_id:
            raise ApiError("_id is required: the id of the work item")
        item = await self.store.find_one(WORKITEMS, {"_id": item_id})
        if item is None or not (readable(principal, item) or has_right(principal, item, INVOKE)):
            raise ApiError(f"work item {item_id} not found, or you have no access to it")
        found = await self.store.find(MQ, {"_id": item.get("wiqid"), "_type": QUEUE_TYPE})
        queue = found[0] if found else None
        holder = queue if queue is not None else item
        for right in (INVOKE, rights):
            if not has_right(principal, holder, right):
                where = f"work item queue {item.get('wiq')!r}" if queue else f"work item {item_id}"
                raise AccessDenied(
                    f"access denied: you lack the {right_name(right)} right on {where}"
                )
        if rights & DELETE and not has_right(principal, item, DELETE):
            raise AccessDenied(f"access denied: you lack the delete right on work item {item_id}")
        return item, queue

    async def update_item(self, principal: Principal, data: Mapping[str, Any]) -> Document:
        """``updateworkitem``: set state, payload, errors; retries and chaining (module doc)."""
        item, queue = await self._item(principal, data.get("_id"), INVOKE)
        queue = queue or {}
        state = data.get("state")
        if state not in (None, "") and state not in UPDATE_STATES:
            raise ApiError(f"state must be one of {', '.join(UPDATE_STATES)}")
        errortype = data.get("errortype")
        if errortype not in (None, "") and errortype not in ERROR_TYPES:
            raise ApiError("errortype must be application or business")
        now = utcnow()
        changes: dict[str, Any] = {**stamp(principal, now)}
        unset: dict[str, Any] = {}
        if "payload" in data:
            changes["payload"] = parse_payload(data.get("payload"))
        if data.get("name") not in (None, ""):
            changes["name"] = check_name(data.get("name"), "name of the work item")
        if "priority" in data or "wipriority" in data:
            changes["priority"] = parse_priority(data.get("priority", data.get("wipriority")))
        for key in ("errormessage", "errorsource"):
            if key in data:
                value = data.get(key)
                changes[key] = "" if value is None else str(value)[:10000]
        if errortype not in (None, ""):
            changes["errortype"] = errortype
        for kind in ("success", "failed"):
            if any(data.get(k) not in (None, "") for k in (f"{kind}_wiqid", f"{kind}_wiq")):
                changes[f"{kind}_wiq"], changes[f"{kind}_wiqid"] = await self._target(
                    principal, data, kind
                )
        nextrun = parse_time(data.get("nextrun"))
        ignore = flag(data, "ignoremaxretries")
        kind = errortype or item.get("errortype") or "application"
        final = state or item.get("state")
        if state == "retry":
            retries = int(item.get("retries") or 0)
            maxretries = int(queue.get("maxretries") or DEFAULT_MAXRETRIES)
            if kind == "business" and not ignore:
                final = "failed"
            elif ignore or retries + 1 < maxretries:
                final = "new"
                changes["retries"] = retries + 1
                delay = float(queue.get("retrydelay") or 0)
                changes["nextrun"] = nextrun or now + dt.timedelta(seconds=delay)
                changes["userid"], changes["username"] = "", ""
            else:
                final = "failed"
        elif state == "new":
            changes["nextrun"] = nextrun or now
        elif nextrun is not None:
            changes["nextrun"] = nextrun
        if final != item.get("state"):
            changes["state"] = final
        if final in ("successful", "failed"):
            unset["nextrun"] = ""
        new_files = data.get("files")
        if new_files not in (None, []):
            if not isinstance(new_files, list):
                raise ApiError("files must be a list of {filename, file, compressed}")
            for entry in new_files:
                check_file(entry)
            holder = queue or {"_acl": item.get("_acl"), "name": item["wiq"], "_id": item["wiqid"]}
            added = [await self._save_file(principal, holder, item, e) for e in new_files]
            changes["files"] = list(item.get("files") or []) + added
        update: dict[str, Any] = {"$set": changes, "$inc": {"_version": 1}}
        if unset:
            update["$unset"] = unset
        guard = {"_id": item["_id"], "_version": item.get("_version", 0)}
        updated = await self.store.update_one(WORKITEMS, guard, update)
        if updated is None:
            raise ApiError(f"work item {item['_id']} changed while it was being updated; try again")
        if final in ("successful", "failed") and item.get("state") != final:
            await self._chain(principal, queue, updated, final)
        if final == "new" and self.nudge is not None and queue:
            delay = (changes.get("nextrun", now) - now).total_seconds()
            self.nudge(queue, max(delay, 0.0))
        return updated

    async def _chain(
        self, principal: Principal, queue: Mapping[str, Any], item: Document, state: str
    ) -> None:
        """Copy a finished item into its (or its queue's) success or failed queue."""
        kind = "success" if state == "successful" else "failed"
        target_id = item.get(f"{kind}_wiqid") or queue.get(f"{kind}_wiqid")
        target_name = item.get(f"{kind}_wiq") or queue.get(f"{kind}_wiq")
        if not target_id and not target_name:
            return
        target = await self._find_queue({"wiqid": target_id, "wiq": target_name}, ITEM_KEYS)
        if target is None:
            log.warning("work item %s: %s queue %s is gone", item["_id"], kind, target_name)
            return
        now = utcnow()
        copy = self._new_item(principal, target, {"name": item.get("name")}, now)
        copy["payload"] = item.get("payload") or {}
        copy["priority"] = item.get("priority", DEFAULT_PRIORITY)
        copy["nextrun"] = now + dt.timedelta(seconds=float(target.get("initialdelay") or 0))
        for key in ("success_wiq", "success_wiqid", "failed_wiq", "failed_wiqid"):
            copy[key] = ""
        names = {
            f.get("_id"): f.get("name") for f in item.get("files") or [] if isinstance(f, Mapping)
        }
        for source in await secure_files(self.platform).attached(item):
            copied = await self._copy_file(principal, target, copy, source)
            if copied is not None:
                copied["name"] = str(names.get(source["_id"]) or copied["name"])
                copy["files"].append(copied)
        await self.store.insert_many(WORKITEMS, [copy])
        if self.nudge is not None:
            self.nudge(target)

    async def delete_item(self, principal: Principal, data: Mapping[str, Any]) -> None:
        """``deleteworkitem``: invoke on the queue and delete on the item; files go too."""
        item, _queue = await self._item(principal, data.get("_id"), DELETE)
        deleted = await self.store.delete(WORKITEMS, {"_id": item["_id"]})
        if not deleted:
            raise ApiError(f"work item {item['_id']} not found")
        files = secure_files(self.platform)
        await files.remove(await files.attached(deleted[0]))

    async def waiting_queues(self) -> list[Document]:
        """Queues with an ``amqpqueue`` that have due ``new`` items (for the monitor)."""
        queues = await self.store.find(
            MQ, {"_type": QUEUE_TYPE, "amqpqueue": {"$nin": [None, ""]}}, limit=10000
        )
        now = utcnow()
        waiting = []
        for queue in queues:
            due = await self.store.find(
                WORKITEMS,
                {"wiqid": queue["_id"], "state": "new", "nextrun": {"$lte": now}},
                projection={"_id": 1},
                limit=1,
            )
            if due:
                waiting.append(queue)
        return waiting


def _owner(item: Mapping[str, Any], queue: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata that ties a file to work item ``item`` of ``queue``."""
    return {"wi": item["_id"], "wiq": queue.get("name"), "wiqid": queue.get("_id")}
