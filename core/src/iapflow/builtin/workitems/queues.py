"""Work item queues: ``mq`` documents of ``_type: workitemqueue``, each with its users role;
finding one by id or name with the rights a command needs, adding, changing, purging and
deleting it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from iapflow import wellknown
from iapflow.builtin.files.service import secure_files
from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied, ApiError
from iapflow.ids import name_id
from iapflow.secure import audit
from iapflow.secure.acl import (
    DELETE,
    FULL_CONTROL,
    INVOKE,
    READ,
    UPDATE,
    clean_acl,
    ensure_ace,
    has_right,
)
from iapflow.secure.principal import Principal

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.secure.layer import ServiceWrites

from iapflow.builtin.workitems.parse import (
    DEFAULT_MAXRETRIES,
    MQ,
    QUEUE_TEXT_FIELDS,
    QUEUE_TYPE,
    SERVER,
    WORKITEMS,
    check_name,
    flag,
    number,
    right_name,
    text,
)

log = logging.getLogger("iapflow.workitems")


def stamp(principal: Principal, now: dt.datetime) -> dict[str, Any]:
    return {"_modified": now, "_modifiedby": principal.name, "_modifiedbyid": principal.id}


class QueueOps:
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
        if queue is None or not (has_right(principal, queue, rights) or readable(principal, queue)):
            raise ApiError(f"work item queue {shown!r} not found, or you have no access to it")
        if not has_right(principal, queue, rights):
            raise AccessDenied(
                f"access denied: you lack the {right_name(rights)} right on work item queue "
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
        fields["maxretries"] = number(
            data, "maxretries", base.get("maxretries", DEFAULT_MAXRETRIES), 1
        )
        fields["retrydelay"] = number(data, "retrydelay", base.get("retrydelay", 0), 0)
        fields["initialdelay"] = number(data, "initialdelay", base.get("initialdelay", 0), 0)
        for key in QUEUE_TEXT_FIELDS:
            fields[key] = text(data, key) if key in data else base.get(key, "")
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
            if not flag(data, "skiprole"):
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
                    await self.platform.data.delete_one(SERVER, "users", role["_id"])
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
        if flag(data, "purge"):
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
        if count and not flag(data, "purge"):
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
                await self.platform.data.delete_one(SERVER, "users", role_id)
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


def readable(principal: Principal, doc: Mapping[str, Any]) -> bool:
    return has_right(principal, doc, READ)
