"""What no client filter, update or pipeline may do: run code or write elsewhere (non-admins),
read secret fields (anyone), or change system fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iapflow.errors import AccessDenied, ApiError
from iapflow.secure.acl import mentions
from iapflow.wire import check_depth

# Operators that run server-side code or write elsewhere: admins only.
ADMIN_ONLY_OPERATORS = frozenset({"$where", "$function", "$accumulator", "$out", "$merge"})
# Stages that reveal server or other collections' internals: admins only.
ADMIN_ONLY_STAGES = frozenset(
    {
        "$collStats",
        "$indexStats",
        "$currentOp",
        "$listSessions",
        "$listLocalSessions",
        "$planCacheStats",
        "$changeStream",
        "$listSearchIndexes",
        "$querySettings",
    }
)
# Fields no filter may read, for anyone: matching on them is an oracle for their values.
SECRET_FIELDS = frozenset({"passwordhash"})
# Filter operators that read fields by value ("$passwordhash", patternProperties, this.x): a key
# check cannot see what they read, so they are refused where secret fields are stored.
WHOLE_DOCUMENT_OPERATORS = frozenset({"$expr", "$jsonSchema", "$where", "$function"})


def guard(value: Any, *, admin: bool) -> None:
    """Refuse operators that run code or write elsewhere (non-admins) and reads of secrets (all)."""
    check_depth(value)
    if mentions(value, SECRET_FIELDS):
        raise AccessDenied("filters and pipelines may not read passwordhash")
    if admin:
        return
    if mentions(value, ADMIN_ONLY_OPERATORS):
        found = sorted(op for op in ADMIN_ONLY_OPERATORS if mentions(value, [op]))
        raise AccessDenied(f"{', '.join(found)} may only be used by admins")
    if mentions(value, ADMIN_ONLY_STAGES):
        found = sorted(op for op in ADMIN_ONLY_STAGES if mentions(value, [op]))
        raise AccessDenied(f"{', '.join(found)} may only be used by admins")


def guard_secret_holder(query: Any, projection: Mapping[str, Any] | None = None) -> None:
    """Extra rules for filters and projections on a collection that stores secret fields.

    Operators that evaluate whole documents are refused, and a projection may only include or
    exclude fields: an expression such as ``{"h": "$passwordhash"}`` would copy a secret out.
    """
    if mentions(query, WHOLE_DOCUMENT_OPERATORS):
        found = sorted(op for op in WHOLE_DOCUMENT_OPERATORS if mentions(query, [op]))
        raise AccessDenied(f"{', '.join(found)} cannot be used here: it could read passwordhash")
    for key, value in (projection or {}).items():
        if not (isinstance(value, bool) or value in (0, 1)):
            raise AccessDenied(
                f"projection {key!r}: here a projection may only include (1) or exclude (0) fields"
            )


def updated_fields(update: Mapping[str, Any]) -> set[str]:
    """The top-level fields an operator update writes: its field keys and ``$rename`` targets."""
    touched = set()
    for op, fields in update.items():
        if not isinstance(fields, Mapping):
            continue
        for field, value in fields.items():
            touched.add(str(field).split(".")[0])
            if op == "$rename":
                if not isinstance(value, str):
                    raise ApiError(f"$rename {field!r}: the new name must be a string")
                touched.add(value.split(".")[0])
    return touched
