"""The ``users`` collection as sign-in sees it: users and roles by id or name, the built-in
principals, passwords and memberships. Sign-in (:mod:`iapflow.auth`) reads and writes
principals only through here; clients change them through the data layer and its
:class:`~iapflow.secure.users.UserRules`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from iapflow import wellknown
from iapflow.contracts.storage import Document, Storage
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow.secure.acl import FULL_CONTROL, INVOKE, READ, UPDATE
from iapflow.secure.users import COLLECTION, TOKENS_REVOKED

_ROLE_FIELDS = {"_id": 1, "name": 1, "members": 1}


class PrincipalStore:
    """Users and roles in one storage backend."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def user(self, user_id: str) -> Document | None:
        """The user (not a role) with id ``user_id``."""
        return await self._storage.find_one(COLLECTION, {"_id": user_id, "_type": "user"})

    async def by_username(self, username: str) -> Document | None:
        """The user whose (lower-cased) username is ``username``."""
        return await self._storage.find_one(COLLECTION, {"_type": "user", "username": username})

    async def principal(self, principal_id: str) -> Document | None:
        """The user or role with id ``principal_id``."""
        return await self._storage.find_one(COLLECTION, {"_id": principal_id})

    async def roles(self) -> list[Document]:
        """Every role, with its members."""
        return await self._storage.find(COLLECTION, {"_type": "role"}, projection=_ROLE_FIELDS)

    async def count_users_besides(self, ids: Iterable[str]) -> int:
        """How many users there are apart from those with ``ids``."""
        return await self._storage.count(
            COLLECTION, {"_type": "user", "_id": {"$nin": sorted(ids)}}
        )

    async def revoked_since(self, since: Any) -> list[Document]:
        """Users whose tokens were revoked (password change, disable) at ``since`` or later."""
        return await self._storage.find(
            COLLECTION,
            {"_type": "user", TOKENS_REVOKED: {"$gte": since}},
            projection={"_id": 1, "username": 1, "disabled": 1, "_tokenepoch": 1},
        )

    async def set_fields(self, principal_id: str, fields: dict[str, Any]) -> None:
        """Set ``fields`` on a principal (a new password hash with its revocation)."""
        await self._storage.update_one(COLLECTION, {"_id": principal_id}, {"$set": fields})

    async def new_user(self, username: str, name: str, passwordhash: str) -> Document:
        """Insert a user readable and updatable by itself, owned by ``admins``."""
        user_id = new_id()
        user: Document = {
            "_id": user_id,
            "_type": "user",
            "name": name,
            "username": username,
            "passwordhash": passwordhash,
            "_acl": [
                {"_id": wellknown.ADMINS, "name": "admins", "rights": FULL_CONTROL},
                {"_id": user_id, "name": name, "rights": READ | UPDATE | INVOKE},
            ],
            **wellknown.server_stamp(utcnow()),
        }
        await self._storage.insert_one(COLLECTION, user)
        return user

    async def add_member(self, role_id: str, member_id: str, name: str) -> None:
        """Make ``member_id`` a member of ``role_id`` (nothing when it is one)."""
        await self._storage.update_one(
            COLLECTION,
            {"_id": role_id, "members._id": {"$ne": member_id}},
            {"$push": {"members": {"_id": member_id, "name": name}}},
        )

    async def ensure_builtins(self) -> None:
        """The indexes of ``users``, and the well-known roles and users with their memberships,
        created where missing."""
        await self._storage.create_index(COLLECTION, [("username", 1)], unique=True, sparse=True)
        await self._storage.create_index(COLLECTION, [("_type", 1), ("name", 1)])
        await self._storage.create_index(COLLECTION, [(TOKENS_REVOKED, 1)], sparse=True)
        now = utcnow()
        admins_ace = {"_id": wellknown.ADMINS, "name": "admins", "rights": FULL_CONTROL}
        builtins = [(name, rid, "role") for name, rid in wellknown.BUILTIN_ROLES.items()]
        builtins += [(name, uid, "user") for name, uid in wellknown.BUILTIN_USERS.items()]
        names = {rid: name for name, rid, _ in builtins}
        for name, pid, kind in builtins:
            if await self.principal(pid) is not None:
                continue
            doc: Document = {
                "_id": pid,
                "_type": kind,
                "name": name,
                "_acl": [dict(admins_ace)],
                **wellknown.server_stamp(now),
            }
            if kind == "user":
                doc["username"] = name
                doc["disabled"] = name == "guest"
            else:
                doc["members"] = []
            if pid == wellknown.USERS:
                # Members of "users" (everyone) can read the role, as in OpenFlow.
                doc["_acl"].append({"_id": wellknown.USERS, "name": "users", "rights": READ})
            await self._storage.insert_one(COLLECTION, doc)
        for role_id, member_ids in wellknown.BUILTIN_MEMBERS.items():
            for member_id in member_ids:
                await self.add_member(role_id, member_id, names.get(member_id, ""))
