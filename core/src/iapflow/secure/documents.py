"""What every document write shares: the system fields and their stamps, the collections only
the server writes, the retry bounds, and the client's error for a refused duplicate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from iapflow.errors import AccessDenied, ApiError, DuplicateKeyError
from iapflow.secure import users
from iapflow.secure.principal import Principal

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
REPLACE_RETRIES = 5
# Operator updates ($inc counters...) meet more contention: each retry is one cheap read.
UPDATE_RETRIES = 50
# Fields every write sets; a change of nothing else is no change.
WRITE_STAMP = ("_modified", "_modifiedby", "_modifiedbyid", "_version")

ChangeObserver = Callable[[str, str, dict[str, Any]], Awaitable[None]]
"""``on_change(collection, operation, document)`` after each single-document change."""
BulkObserver = Callable[[str], Awaitable[None]]
"""``on_bulk_change(collection)`` after an ``update_many`` or ``delete_many`` changed any."""
PrincipalResolver = Callable[[str], Awaitable[list[str] | None]]


def duplicate(collection: str, exc: DuplicateKeyError) -> ApiError:
    """The client's error for a write a unique index refused: which fields, never the value,
    the other document or the store's own names. That an ``_id`` is taken is said whether or
    not the caller may read the document holding it: ids are not secret."""
    fields = " and ".join(exc.fields) if exc.fields else "unique fields"
    return ApiError(f"duplicate key: {collection} already has a document with the same {fields}")


def uniqueness_fields(value: Any) -> list[str]:
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


def update_reason(value: Any) -> str | None:
    """``_updatereason`` as it goes into the history record."""
    if value is None or value == "":
        return None
    return str(value)[:1000]


def content(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` without the fields every write sets."""
    return {k: v for k, v in doc.items() if k not in WRITE_STAMP}


def version_guard(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A filter that matches ``doc`` only while it is still that version."""
    if "_version" in doc:
        return {"_id": doc["_id"], "_version": doc["_version"]}
    return {"_id": doc["_id"], "_version": {"$exists": False}}


def doc_key(value: Any) -> Any:
    """A hashable key for a document id (ids are strings, or ObjectIds from older data)."""
    return value if isinstance(value, str) else (type(value).__name__, str(value))


def check_history_write(principal: Principal, collection: str) -> None:
    """History is written by the server: only admins may change it (to import or prune)."""
    if collection.endswith("_hist") and not principal.is_admin:
        raise AccessDenied(f"{collection} is history, written by the server; it cannot be changed")


def check_writable(collection: str, delete: bool = False) -> None:
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
