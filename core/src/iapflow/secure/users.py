"""Rules for the ``users`` collection: users and roles, usernames, passwords, built-in names,
ids that are the server's and never come back, and tokens revoked by a password change.

Principal ids are the server's: a client that is not an admin never chooses the ``_id`` of a
user or role, and no id is given out again after its principal is deleted. Each delete leaves a
tombstone in :data:`TOMBSTONES` (written by the server only); an admin choosing an ``_id`` (to
import users) cannot choose one of those. So an ACL entry naming a deleted principal grants
nothing to anyone. ``restoredocument`` brings the same principal back and lifts its tombstone.

A password change or a change of ``disabled`` gives the user a new :data:`TOKEN_EPOCH`: tokens
carry the epoch they were issued in, and one from an older epoch is refused
(:mod:`iapflow.auth.service`), on every server sharing the store.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from iapflow import wellknown
from iapflow.auth.passwords import hash_password
from iapflow.contracts.storage import Document, Storage
from iapflow.errors import AccessDenied, ApiError, DuplicateKeyError
from iapflow.jsonutil import utcnow
from iapflow.secure.acl import FULL_CONTROL, INVOKE, READ, UPDATE, ensure_ace
from iapflow.secure.guards import updated_fields
from iapflow.secure.principal import Principal
from iapflow.secure.rules import CollectionRules

COLLECTION = "users"
TOMBSTONES = "tombstones"
"""Ids of deleted users and roles; see the module docstring."""
PRINCIPAL_TYPES = ("user", "role")
TOKEN_EPOCH = "_tokenepoch"
"""The user's current token epoch (absent until the first revocation)."""
TOKENS_REVOKED = "_tokensrevoked"
"""When the epoch last changed: servers look for recent changes to close connections."""
# Fields only admins may change on a user.
ADMIN_FIELDS = ("username", "disabled", "_type", "dblocked")
# Fields no operator update may touch: passwords go through ``newpassword`` in a replace, the
# token epoch only changes with them.
SECRET_FIELDS = ("passwordhash", "newpassword", "password", TOKEN_EPOCH, TOKENS_REVOKED)
SELF_RIGHTS = READ | UPDATE | INVOKE


def revocation() -> dict[str, Any]:
    """The fields that end every token issued so far: a new epoch and its time."""
    return {TOKEN_EPOCH: secrets.token_hex(8), TOKENS_REVOKED: utcnow()}


def _username(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError("a user needs a username")
    username = value.strip().lower()
    if len(username) > 256 or any(ch in username for ch in "\x00\n\r"):
        raise ApiError("username is too long or holds control characters")
    return username


def _check_members(members: Any) -> list[dict[str, str]]:
    if members is None:
        return []
    if not isinstance(members, list):
        raise ApiError("members must be a list of {_id, name}")
    cleaned = []
    seen = set()
    for member in members:
        if not isinstance(member, Mapping) or not isinstance(member.get("_id"), str):
            raise ApiError("every member needs an _id")
        if member["_id"] in seen:
            continue
        seen.add(member["_id"])
        cleaned.append({"_id": member["_id"], "name": str(member.get("name", ""))})
    return cleaned


def _guard_builtin_names(item: Mapping[str, Any]) -> None:
    name = str(item.get("name", "")).lower()
    builtin_id = wellknown.BUILTIN_ROLES.get(name)
    if item.get("_type") == "role" and builtin_id and item.get("_id") != builtin_id:
        raise ApiError(f"the role name {name!r} is reserved for the built-in role")
    if item.get("_type") == "user":
        username = str(item.get("username", ""))
        if (
            username in wellknown.BUILTIN_USERS
            and item.get("_id") != wellknown.BUILTIN_USERS[username]
        ):
            raise ApiError(f"the username {username!r} is reserved for the built-in user")


async def _apply_password(item: dict[str, Any], rounds: int) -> bool:
    """Hash ``newpassword`` into ``passwordhash``; True when there was one."""
    item.pop("password", None)
    newpassword = item.pop("newpassword", None)
    if newpassword is None:
        return False
    if not isinstance(newpassword, str) or len(newpassword) < 1 or len(newpassword) > 1024:
        raise ApiError("newpassword must be a non-empty string of at most 1024 characters")
    item["passwordhash"] = await hash_password(newpassword, rounds)
    return True


async def prepare_insert(principal: Principal, item: dict[str, Any], rounds: int) -> None:
    """Validate a new user or role from a client and set its derived fields (in place)."""
    kind = item.get("_type") or "user"
    if kind not in PRINCIPAL_TYPES:
        raise ApiError(f"users holds users and roles; _type {kind!r} is not allowed")
    item["_type"] = kind
    if kind == "user" and not principal.is_admin:
        raise AccessDenied("only admins can create users")
    for field in ("passwordhash", TOKEN_EPOCH, TOKENS_REVOKED):  # the server's
        item.pop(field, None)
    if kind == "user":
        item["username"] = _username(item.get("username"))
        item.setdefault("name", item["username"])
        await _apply_password(item, rounds)
    else:
        if not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ApiError("a role needs a name")
        item["members"] = _check_members(item.get("members"))
        item.pop("username", None)  # a role holding a username would block that user name
        item.pop("newpassword", None)
    _guard_builtin_names(item)


def add_self_ace(item: dict[str, Any]) -> None:
    """A user can read and update (not delete) its own document."""
    if item.get("_type") == "user":
        ensure_ace(item["_acl"], item["_id"], str(item.get("name", "")), SELF_RIGHTS)


async def prepare_replace(
    principal: Principal, original: Mapping[str, Any], item: dict[str, Any], rounds: int
) -> None:
    """Apply the users rules to a full replacement of ``original`` by ``item`` (in place)."""
    if item.get("_type", original.get("_type")) != original.get("_type"):
        raise AccessDenied("the _type of a user or role cannot change")
    item["_type"] = original.get("_type")
    if not principal.is_admin:
        for field in ADMIN_FIELDS:
            if item.get(field, original.get(field)) != original.get(field):
                raise AccessDenied(f"only admins can change {field}")
    for field in (TOKEN_EPOCH, TOKENS_REVOKED):  # the server's, whatever the client sent
        item.pop(field, None)
        if field in original:
            item[field] = original[field]
    if original.get("_type") == "user":
        item["username"] = _username(item.get("username", original.get("username")))
        if item.get("disabled") and original["_id"] == principal.id:
            raise AccessDenied("you cannot disable yourself")
        item.pop("passwordhash", None)
        if original.get("passwordhash"):
            item["passwordhash"] = original["passwordhash"]
        changed = await _apply_password(item, rounds)
        if changed or bool(item.get("disabled")) != bool(original.get("disabled")):
            item.update(revocation())
    else:
        item["members"] = _check_members(item.get("members", original.get("members")))
        item.pop("username", None)
        if original["_id"] in wellknown.WELLKNOWN_IDS and item.get("name") != original.get("name"):
            raise AccessDenied("built-in roles cannot be renamed")
    _guard_builtin_names(item)


def check_operator_update(principal: Principal, update: dict[str, Any]) -> None:
    """Refuse operator updates that touch passwords or token epochs (anyone) or admin-only
    fields (non-admins); one that sets ``disabled`` also ends the user's tokens."""
    touched = updated_fields(update)
    if touched & set(SECRET_FIELDS):
        raise AccessDenied("set passwords with newpassword in a full update, not with operators")
    if not principal.is_admin and touched & set(ADMIN_FIELDS):
        raise AccessDenied(
            f"only admins can change {', '.join(sorted(touched & set(ADMIN_FIELDS)))}"
        )
    if "disabled" in touched:
        update.setdefault("$set", {}).update(revocation())


class UserRules(CollectionRules):
    """The rules above, as the data layer applies them to ``users``."""

    wants_deleted = True

    def __init__(self, storage: Storage, bcrypt_rounds: int) -> None:
        self.storage = storage
        self.rounds = bcrypt_rounds

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Users and roles from clients; ids chosen by the server (or an admin, but never a
        deleted principal's)."""
        if client_id:
            if not principal.is_admin:
                raise AccessDenied("the server chooses the _id of users and roles: leave _id out")
            if await self.storage.find_one(TOMBSTONES, {"_id": doc["_id"]}) is not None:
                raise AccessDenied(
                    f"_id {doc['_id']} belonged to a deleted user or role and is never given "
                    "out again: leave _id out, or restore that principal"
                )
        await prepare_insert(principal, doc, self.rounds)
        add_self_ace(doc)

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """See :func:`prepare_replace`."""
        await prepare_replace(principal, original, new, self.rounds)
        add_self_ace(new)

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """See :func:`check_operator_update`."""
        check_operator_update(principal, update)

    async def check_delete(self, principal: Principal, doc: Document) -> None:
        """Built-in principals and the caller itself are never deleted."""
        if doc["_id"] in wellknown.WELLKNOWN_IDS:
            raise AccessDenied(f"{doc.get('name') or doc['_id']} is built in and cannot be deleted")
        if doc["_id"] == principal.id:
            raise AccessDenied("you cannot delete your own user")

    def delete_filter(self, principal: Principal) -> Mapping[str, Any] | None:
        """Bulk deletes leave built-in principals and the caller itself alone."""
        return {"_id": {"$nin": sorted(wellknown.WELLKNOWN_IDS | {principal.id})}}

    async def after_delete(self, principal: Principal, docs: Sequence[Document]) -> None:
        """Leave a tombstone for every deleted user and role."""
        now = utcnow()
        for doc in docs:
            tombstone = {
                "_id": doc["_id"],
                "_type": str(doc.get("_type") or ""),
                "name": str(doc.get("name") or ""),
                "_acl": [{"_id": wellknown.ADMINS, "name": "admins", "rights": FULL_CONTROL}],
                "_created": now,
                "_createdby": principal.name,
                "_createdbyid": principal.id,
            }
            # deleted before and restored since: the tombstone is back already
            with contextlib.suppress(DuplicateKeyError):
                await self.storage.insert_one(TOMBSTONES, tombstone)

    async def after_restore(self, principal: Principal, doc: Document) -> None:
        """The same principal is back: its id is in use again."""
        await self.storage.delete_one(TOMBSTONES, {"_id": doc["_id"]})
