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
through :mod:`iapflow.data.files`, with the queue's ACL; an item's copies and its deletion touch
only the files that belong to it.

The service checks the rights its commands promise and then writes through the data layer's
:class:`~iapflow.data.layer.ServiceWrites`. The generic document commands reach ``workitems``
and work item queues in ``mq`` only past :class:`WorkitemRules` and :class:`QueueRules`: no
item is inserted, moved to another queue, given files or chained elsewhere, and no queue is
changed, except through the work item commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from iapflow import audit, wellknown
from iapflow.data.files import decode_base64, inflate, pieces, secure_files
from iapflow.data.query import coerce, updated_fields
from iapflow.data.rules import CollectionRules
from iapflow.errors import AccessDenied, ApiError, StorageError
from iapflow.ids import name_id, new_id
from iapflow.jsonutil import parse_iso_date, utcnow
from iapflow.security.acl import (
    DELETE,
    FULL_CONTROL,
    INVOKE,
    READ,
    UPDATE,
    clean_acl,
    ensure_ace,
    has_right,
)
from iapflow.security.principal import Principal
from iapflow.storage import Document

if TYPE_CHECKING:
    from iapflow.data.layer import ServiceWrites
    from iapflow.platform import Platform

log = logging.getLogger("iapflow.workitems")

MQ = "mq"
WORKITEMS = "workitems"
QUEUE_TYPE = "workitemqueue"
ITEM_TYPE = "workitem"
STATES = ("new", "processing", "successful", "failed")
UPDATE_STATES = ("new", "processing", "successful", "failed", "retry")
ERROR_TYPES = ("application", "business")
DEFAULT_PRIORITY = 2
DEFAULT_MAXRETRIES = 3
MAX_NAME = 200
MAX_ITEMS_PER_CALL = 1000
ITEM_KEYS = ("wiqid", "wiq")
"""How item commands name their queue (their ``name`` and ``_id`` are the item's)."""
_TRUE = (True, 1, "true", "True", "1")
# Queue fields a client sets (besides name and _acl).
_TEXT_FIELDS = ("workflowid", "robotqueue", "amqpqueue", "projectid", "packageid")
_ROOT = Principal(id=wellknown.ROOT, name="root", username="root")


def _right_name(rights: int) -> str:
    return {READ: "read", UPDATE: "update", DELETE: "delete", INVOKE: "invoke"}.get(
        rights, "the needed"
    )


# -- input checks -------------------------------------------------------------------------------


def check_name(value: Any, what: str = "name") -> str:
    """A queue or item name: a non-empty string of printable characters."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(f"{what} is required: a non-empty string")
    name = value.strip()
    if len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ApiError(f"{what} must be at most {MAX_NAME} printable characters")
    return name


def _number(data: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = data.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ApiError(f"{key} must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ApiError(f"{key} must be a number")
    if value < minimum or value > 10**9:
        raise ApiError(f"{key} must be a number between {minimum:g} and 1000000000")
    return int(value) if float(value).is_integer() else float(value)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 1024:
        raise ApiError(f"{key} must be a string")
    return value


def _flag(data: Mapping[str, Any], key: str) -> bool:
    return data.get(key) in _TRUE


def parse_priority(value: Any, default: int = DEFAULT_PRIORITY) -> int:
    """A work item priority: a whole number, lower runs sooner (default 2)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ApiError("priority must be a whole number (lower runs sooner)")
    return int(value)


def parse_time(value: Any, key: str = "nextrun") -> dt.datetime | None:
    """``nextrun``: an ISO-8601 string, a protobuf Timestamp ``{seconds, nanos}``, or
    milliseconds since 1970; ``None`` when not given."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        parsed = parse_iso_date(value)
        if parsed is None:
            raise ApiError(f"{key} must be an ISO-8601 time such as 2025-01-31T12:00:00Z")
        return parsed
    try:
        if isinstance(value, Mapping) and "seconds" in value:
            seconds = float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    except (TypeError, ValueError, OverflowError):
        pass
    raise ApiError(f"{key} must be an ISO-8601 time, {{seconds, nanos}} or milliseconds")


def parse_payload(value: Any) -> dict[str, Any]:
    """An item payload: an object; scalars and lists are wrapped as ``{"value": ...}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        _check_keys(value, 0)
        result: dict[str, Any] = coerce(value)
        return result
    _check_keys(value, 0)
    return {"value": coerce(value)}


def _check_keys(value: Any, depth: int) -> None:
    if depth > 64:
        raise ApiError("payload is nested deeper than 64 levels")
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or key.startswith("$") or "\x00" in key:
                raise ApiError(
                    f"payload field name {str(key)[:60]!r} is not allowed (no leading $, no NUL)"
                )
            _check_keys(inner, depth + 1)
    elif isinstance(value, list):
        for inner in value:
            _check_keys(inner, depth + 1)


def _stamp(principal: Principal, now: dt.datetime) -> dict[str, Any]:
    return {"_modified": now, "_modifiedby": principal.name, "_modifiedbyid": principal.id}


# -- the service ----------------------------------------------------------------------------------


class WorkitemService:
    """Work item queues and items for one platform.

    ``nudge`` is called with a queue document whenever its items may be waiting (after an add,
    and when a retried item becomes due); the command plugin wires it to the message queues.
    """

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._queue_lock = asyncio.Lock()
        self._pop_locks: dict[str, list[Any]] = {}
        self.nudge: Callable[..., None] | None = None
        """``nudge(queue, delay=0.0)``: items of ``queue`` are (or will be in ``delay``
        seconds) waiting."""

    @property
    def store(self) -> ServiceWrites:
        """The data layer's writes for services (rights are checked here first)."""
        return self.platform.data.service

    async def ensure_indexes(self) -> None:
        """Indexes for pops (by queue, state, priority) and queue lookups by name."""
        await self.store.create_index(
            WORKITEMS, [("wiqid", 1), ("state", 1), ("priority", 1), ("nextrun", 1)]
        )
        await self.store.create_index(MQ, [("_type", 1), ("name", 1)])

    # -- queues -------------------------------------------------------------------------------

    async def _find_queue(
        self, data: Mapping[str, Any], keys: tuple[str, ...] = ("_id", "wiqid", "name", "wiq")
    ) -> Document | None:
        """The queue named in ``data`` by the first given of ``keys`` (no ACL check); keys
        ending in ``id`` hold an id, the others a name."""
        for key in keys:
            value = data.get(key)
            if value in (None, ""):
                continue
            if key.endswith("id"):
                if not isinstance(value, str):
                    raise ApiError(f"{key} must be the id of a work item queue")
                query = {"_id": value, "_type": QUEUE_TYPE}
            else:
                query = {"name": check_name(value, key), "_type": QUEUE_TYPE}
            found = await self.store.find(MQ, query, limit=1)
            return found[0] if found else None
        return None

    async def queue(
        self,
        principal: Principal,
        data: Mapping[str, Any],
        rights: int,
        keys: tuple[str, ...] = ("_id", "wiqid", "name", "wiq"),
    ) -> Document:
        """The queue ``data`` names by ``keys``, if ``principal`` has ``rights`` on it."""
        given = [k for k in keys if data.get(k) not in (None, "")]
        if not given:
            raise ApiError(f"name the work item queue with {' or '.join(keys)}")
        queue = await self._find_queue(data, keys)
        shown = str(data[given[0]])[:200]
        if queue is None or not (
            has_right(principal, queue, rights) or _readable(principal, queue)
        ):
            raise ApiError(f"work item queue {shown!r} not found, or you have no access to it")
        if not has_right(principal, queue, rights):
            raise AccessDenied(
                f"access denied: you lack the {_right_name(rights)} right on work item queue "
                f"{queue.get('name')!r}"
            )
        return queue

    async def _target(
        self, principal: Principal, data: Mapping[str, Any], kind: str
    ) -> tuple[str, str]:
        """``(<kind>_wiq, <kind>_wiqid)`` from ``data``: a queue the caller may invoke, or empty."""
        keys = (f"{kind}_wiqid", f"{kind}_wiq")
        if not any(data.get(k) not in (None, "") for k in keys):
            return "", ""
        target = await self.queue(principal, data, INVOKE, keys)
        return str(target["name"]), str(target["_id"])

    def _queue_fields(self, data: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        fields["maxretries"] = _number(
            data, "maxretries", base.get("maxretries", DEFAULT_MAXRETRIES), 1
        )
        fields["retrydelay"] = _number(data, "retrydelay", base.get("retrydelay", 0), 0)
        fields["initialdelay"] = _number(data, "initialdelay", base.get("initialdelay", 0), 0)
        for key in _TEXT_FIELDS:
            fields[key] = _text(data, key) if key in data else base.get(key, "")
        return fields

    async def add_queue(self, principal: Principal, data: Mapping[str, Any]) -> Document:
        """``addworkitemqueue``: a new uniquely named queue and, unless ``skiprole``, its
        ``<name> users`` role (the creator and ``workitem queue admins``) with full control."""
        name = check_name(data.get("name"))
        fields = self._queue_fields(data, {})
        success = await self._target(principal, data, "success")
        failed = await self._target(principal, data, "failed")
        acl = clean_acl(data.get("_acl"))
        async with self._queue_lock:
            if await self._find_queue({"name": name}, ("name",)) is not None:
                raise ApiError(f"a work item queue named {name!r} already exists")
            role: Document | None = None
            if not _flag(data, "skiprole"):
                role = await self._users_role(principal, name)
                ensure_ace(acl, role["_id"], role["name"], FULL_CONTROL)
            doc = {
                "_id": name_id(QUEUE_TYPE, name),  # another replica's same name: duplicate key
                "_type": QUEUE_TYPE,
                "name": name,
                **fields,
                "success_wiq": success[0],
                "success_wiqid": success[1],
                "failed_wiq": failed[0],
                "failed_wiqid": failed[1],
                "usersrole": role["_id"] if role else "",
                "_acl": acl,
            }
            try:
                return await self.platform.data.insert_one(principal, MQ, doc, rules=False)
            except BaseException:
                if role is not None:
                    await self.platform.data.delete_one(_ROOT, "users", role["_id"])
                if await self._find_queue({"name": name}, ("name",)) is not None:
                    raise ApiError(f"a work item queue named {name!r} already exists") from None
                raise

    async def _users_role(self, principal: Principal, name: str) -> Document:
        role_name = f"{name} users"
        taken = await self.store.find(
            "users", {"_type": "role", "name": role_name}, projection={"_id": 1}, limit=1
        )
        if taken:
            raise ApiError(
                f"a role named {role_name!r} already exists; remove it, or add the queue "
                "with skiprole: true"
            )
        members = [{"_id": principal.id, "name": principal.name}]
        if principal.id != wellknown.WORKITEM_QUEUE_ADMINS:
            members.append(
                {"_id": wellknown.WORKITEM_QUEUE_ADMINS, "name": "workitem queue admins"}
            )
        acl = [
            {
                "_id": wellknown.WORKITEM_QUEUE_ADMINS,
                "name": "workitem queue admins",
                "rights": FULL_CONTROL,
            },
        ]
        role = await self.platform.data.insert_one(
            principal,
            "users",
            {"_type": "role", "name": role_name, "members": members, "_acl": acl},
        )
        # The creator's cached roles must include the new role from the next request on.
        self.platform.auth.roles.invalidate()
        return role

    async def update_queue(self, principal: Principal, data: Mapping[str, Any]) -> Document:
        """``updateworkitemqueue``: change a queue's settings (update right); ``purge`` first
        deletes all its items and their files. A new ``_acl`` is copied onto its items."""
        queue = await self.queue(principal, data, UPDATE)
        if _flag(data, "purge"):
            await self.purge(principal, queue)
        new = dict(queue)
        new.update(self._queue_fields(data, queue))
        if data.get("name") not in (None, "") and data.get("_id") not in (None, ""):
            name = check_name(data.get("name"))
            if name != queue["name"]:
                async with self._queue_lock:
                    if await self._find_queue({"name": name}, ("name",)) is not None:
                        raise ApiError(f"a work item queue named {name!r} already exists")
                new["name"] = name
        for kind in ("success", "failed"):
            if any(k in data for k in (f"{kind}_wiqid", f"{kind}_wiq")):
                new[f"{kind}_wiq"], new[f"{kind}_wiqid"] = await self._target(principal, data, kind)
        if "_acl" in data:
            new["_acl"] = clean_acl(data.get("_acl"))
            if queue.get("usersrole"):
                ensure_ace(new["_acl"], queue["usersrole"], f"{new['name']} users", FULL_CONTROL)
        updated = await self.platform.data.replace(principal, MQ, new, rules=False)
        if updated.get("_acl") != queue.get("_acl"):
            await self.store.update_many(
                WORKITEMS, {"wiqid": queue["_id"]}, {"$set": {"_acl": updated["_acl"]}}
            )
        if updated.get("name") != queue.get("name"):
            await self.store.update_many(
                WORKITEMS, {"wiqid": queue["_id"]}, {"$set": {"wiq": updated["name"]}}
            )
        return updated

    async def delete_queue(self, principal: Principal, data: Mapping[str, Any]) -> None:
        """``deleteworkitemqueue``: refused while it holds items unless ``purge``; its users
        role goes with it."""
        queue = await self.queue(principal, data, DELETE)
        count = await self.store.count(WORKITEMS, {"wiqid": queue["_id"]})
        if count and not _flag(data, "purge"):
            raise ApiError(
                f"work item queue {queue['name']!r} still holds {count} work item(s); "
                "delete them first, or pass purge: true"
            )
        if count:
            await self.purge(principal, queue)
        await self.platform.data.delete_one(principal, MQ, queue["_id"], rules=False)
        role_id = queue.get("usersrole")
        if isinstance(role_id, str) and role_id and role_id not in wellknown.WELLKNOWN_IDS:
            with contextlib.suppress(ApiError):  # already gone
                await self.platform.data.delete_one(_ROOT, "users", role_id)
            self.platform.auth.roles.invalidate()

    async def purge(self, principal: Principal, queue: Document) -> int:
        """Delete every item of ``queue`` and their files; audited."""
        files = secure_files(self.platform)
        await files.remove(await files.of_queue(queue["_id"]))
        deleted = await self.store.delete_many(WORKITEMS, {"wiqid": queue["_id"]})
        await audit.record_action(
            self.platform,
            principal,
            QUEUE_TYPE,
            str(queue.get("name")),
            action="purge",
            wiqid=queue["_id"],
            deleted=deleted,
        )
        return deleted

    # -- items --------------------------------------------------------------------------------

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
                    _check_file(entry)
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
            **_stamp(principal, now),
            "_version": 0,
        }

    async def _save_file(
        self, principal: Principal, queue: Document, item: Document, entry: Mapping[str, Any]
    ) -> dict[str, Any]:
        files = secure_files(self.platform)
        limit = files.max_bytes
        if entry.get("compressed") in _TRUE:
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
                    **_stamp(principal, now),
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
        if item is None or not (_readable(principal, item) or has_right(principal, item, INVOKE)):
            raise ApiError(f"work item {item_id} not found, or you have no access to it")
        found = await self.store.find(MQ, {"_id": item.get("wiqid"), "_type": QUEUE_TYPE})
        queue = found[0] if found else None
        holder = queue if queue is not None else item
        for right in (INVOKE, rights):
            if not has_right(principal, holder, right):
                where = f"work item queue {item.get('wiq')!r}" if queue else f"work item {item_id}"
                raise AccessDenied(
                    f"access denied: you lack the {_right_name(right)} right on {where}"
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
        changes: dict[str, Any] = {**_stamp(principal, now)}
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
        ignore = _flag(data, "ignoremaxretries")
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
                _check_file(entry)
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


def _readable(principal: Principal, doc: Mapping[str, Any]) -> bool:
    return has_right(principal, doc, READ)


def _check_file(entry: Any) -> None:
    if not isinstance(entry, Mapping):
        raise ApiError("every file must be an object {filename, file, compressed}")
    if not isinstance(entry.get("filename"), str) or not entry["filename"].strip():
        raise ApiError("every file needs a filename")
    if not isinstance(entry.get("file"), str):
        raise ApiError(f"file {entry['filename']!r} needs its content as a base64 string in file")


# -- rules for the generic document commands ----------------------------------------------------

# Item fields only the work item commands set: which queue, which files, where it goes next.
PROTECTED_ITEM_FIELDS = (
    "wiq", "wiqid", "files", "success_wiq", "success_wiqid", "failed_wiq", "failed_wiqid",
)  # fmt: skip
# Queue fields that route items elsewhere or name the queue's role.
PROTECTED_QUEUE_FIELDS = (
    "success_wiq", "success_wiqid", "failed_wiq", "failed_wiqid", "usersrole",
)  # fmt: skip


def _aces(doc: Mapping[str, Any]) -> set[tuple[Any, Any, bool]]:
    acl = doc.get("_acl")
    return {
        (a.get("_id"), a.get("rights"), bool(a.get("deny")))
        for a in (acl if isinstance(acl, list) else [])
        if isinstance(a, Mapping)
    }


class WorkitemRules(CollectionRules):
    """``workitems`` through ``insertone``/``updateone``/``deleteone``: items are added with
    ``addworkitem``; an item's queue, files, chaining targets and ACL change only through the
    work item commands; a deleted item takes its own files along."""

    wants_deleted = True

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Only admins insert items directly (imports); others use ``addworkitem``."""
        if not principal.is_admin:
            raise AccessDenied(
                "work items are added with addworkitem (pushworkitem), not insertone"
            )

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """The protected fields and the ACL stay as they are."""
        if principal.is_admin:
            return
        for field in PROTECTED_ITEM_FIELDS:
            if new.get(field) != original.get(field):
                raise AccessDenied(f"a work item's {field} changes only through updateworkitem")
        if _aces(new) != _aces(original):
            raise AccessDenied(
                "a work item's _acl is its queue's: change it with updateworkitemqueue"
            )

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """Operators may not touch the protected fields."""
        if principal.is_admin:
            return
        touched = sorted(updated_fields(update) & set(PROTECTED_ITEM_FIELDS))
        if touched:
            raise AccessDenied(
                f"a work item's {', '.join(touched)} changes only through updateworkitem"
            )

    async def after_delete(self, principal: Principal, docs: Sequence[Document]) -> None:
        """The deleted items' own files go too."""
        files = secure_files(self.platform)
        for doc in docs:
            await files.remove(await files.attached(doc))


class QueueRules(CollectionRules):
    """Work item queues in ``mq``: made with ``addworkitemqueue`` and changed with
    ``updateworkitemqueue`` (which keeps the items' ACL and name in step and checks the invoke
    right on chaining targets)."""

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Only admins insert queue documents directly."""
        if doc.get("_type") == QUEUE_TYPE and not principal.is_admin:
            raise AccessDenied("work item queues are made with addworkitemqueue, not insertone")

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """Nothing becomes, or stops being, a queue; queues change with updateworkitemqueue."""
        if principal.is_admin:
            return
        if QUEUE_TYPE in (original.get("_type"), new.get("_type")):
            raise AccessDenied(
                "work item queues are changed with updateworkitemqueue, not updateone"
            )

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """Operators may not re-route a queue's items or change its role."""
        if principal.is_admin:
            return
        touched = sorted(updated_fields(update) & set(PROTECTED_QUEUE_FIELDS))
        if touched:
            raise AccessDenied(
                f"{', '.join(touched)} of a work item queue changes only through "
                "updateworkitemqueue"
            )
