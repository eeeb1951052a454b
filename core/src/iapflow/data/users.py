"""Rules for the ``users`` collection: users and roles, usernames, passwords, built-in names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iapflow import wellknown
from iapflow.auth.passwords import hash_password
from iapflow.data.query import updated_fields
from iapflow.errors import AccessDenied, ApiError
from iapflow.security.acl import INVOKE, READ, UPDATE, ensure_ace
from iapflow.security.principal import Principal

COLLECTION = "users"
PRINCIPAL_TYPES = ("user", "role")
# Fields only admins may change on a user.
ADMIN_FIELDS = ("username", "disabled", "_type", "dblocked")
# Fields no operator update may touch: passwords go through ``newpassword`` in a replace.
SECRET_FIELDS = ("passwordhash", "newpassword", "password")
SELF_RIGHTS = READ | UPDATE | INVOKE


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


async def _apply_password(item: dict[str, Any], rounds: int) -> None:
    item.pop("password", None)
    newpassword = item.pop("newpassword", None)
    if newpassword is not None:
        if not isinstance(newpassword, str) or len(newpassword) < 1 or len(newpassword) > 1024:
            raise ApiError("newpassword must be a non-empty string of at most 1024 characters")
        item["passwordhash"] = await hash_password(newpassword, rounds)


async def prepare_insert(principal: Principal, item: dict[str, Any], rounds: int) -> None:
    """Validate a new user or role from a client and set its derived fields (in place)."""
    kind = item.get("_type") or "user"
    if kind not in PRINCIPAL_TYPES:
        raise ApiError(f"users holds users and roles; _type {kind!r} is not allowed")
    item["_type"] = kind
    if kind == "user" and not principal.is_admin:
        raise AccessDenied("only admins can create users")
    item.pop("passwordhash", None)
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
    if original.get("_type") == "user":
        item["username"] = _username(item.get("username", original.get("username")))
        if item.get("disabled") and original["_id"] == principal.id:
            raise AccessDenied("you cannot disable yourself")
        item.pop("passwordhash", None)
        if original.get("passwordhash"):
            item["passwordhash"] = original["passwordhash"]
        await _apply_password(item, rounds)
    else:
        item["members"] = _check_members(item.get("members", original.get("members")))
        item.pop("username", None)
        if original["_id"] in wellknown.WELLKNOWN_IDS and item.get("name") != original.get("name"):
            raise AccessDenied("built-in roles cannot be renamed")
    _guard_builtin_names(item)


def check_operator_update(principal: Principal, update: Mapping[str, Any]) -> None:
    """Refuse operator updates that touch passwords (anyone) or admin-only fields (non-admins)."""
    touched = updated_fields(update)
    if touched & set(SECRET_FIELDS):
        raise AccessDenied("set passwords with newpassword in a full update, not with operators")
    if not principal.is_admin and touched & set(ADMIN_FIELDS):
        raise AccessDenied(
            f"only admins can change {', '.join(sorted(touched & set(ADMIN_FIELDS)))}"
        )
