"""Access control lists: rights bits, ACL filters and ACL clean-up.

Each document carries ``_acl``: a list of entries ``{_id, name, rights, deny?}`` where ``_id`` is a
user or role id and ``rights`` a bitmask (OpenFlow's values). A caller may do X to a document when
an entry naming the caller or one of its roles grants every bit of X and no ``deny`` entry naming
them takes any of those bits away. Admins bypass all of it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from iapflow.errors import ApiError
from iapflow.secure.principal import Principal

CREATE = 1
READ = 2
UPDATE = 4
DELETE = 8
INVOKE = 16
FULL_CONTROL = 65535

MAX_ACES = 128

# Collections whose ACL lives in ``metadata._acl`` (GridFS file documents).
_METADATA_ACL_SUFFIX = ".files"


def acl_field(collection: str) -> str:
    """Where the ACL lives in documents of ``collection``."""
    if collection.endswith(_METADATA_ACL_SUFFIX) or collection == "files":
        return "metadata._acl"
    return "_acl"


def normalise_rights(value: Any) -> int:
    """Turn ``-1``, numbers and OpenFlow's legacy base64 bitmaps into a 16-bit rights mask."""
    if isinstance(value, bool):
        raise ApiError("ACL rights must be a number, not a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not value.is_integer():
            raise ApiError(f"ACL rights must be a whole number, got {value!r}")
        number = int(value)
        if number == -1:
            return FULL_CONTROL
        if number < 0 or number > FULL_CONTROL:
            raise ApiError(f"ACL rights must be between 0 and {FULL_CONTROL}, or -1")
        return number
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raise ApiError(f"ACL rights {value[:40]!r} is neither a number nor base64") from None
        # Legacy layout: bit n of the bitmap (1-based, least significant bit first) = right n.
        mask = 0
        for bit in range(16):
            byte = bit // 8
            if byte < len(raw) and raw[byte] & (1 << (bit % 8)):
                mask |= 1 << bit
        return mask
    raise ApiError("ACL rights must be a number")


def _bit_positions(mask: int) -> list[int]:
    return [bit for bit in range(16) if mask & (1 << bit)]


def access_filter(principal: Principal, rights: int, collection: str) -> dict[str, Any] | None:
    """The filter clause restricting ``collection`` to what ``principal`` may do ``rights`` on.

    Returns ``None`` for admins. The clause is one key (the ACL field) so that it can be folded
    into a user query as a plain conjunction next to indexed fields.
    """
    if principal.is_admin:
        return None
    return {acl_field(collection): acl_condition(principal.ids, rights)}


def acl_condition(ids: list[str], rights: int) -> dict[str, Any]:
    """The condition on an ACL array: some entry grants ``rights`` and no deny entry takes them."""
    bits = _bit_positions(rights)
    return {
        "$elemMatch": {"_id": {"$in": ids}, "rights": {"$bitsAllSet": bits}, "deny": {"$ne": True}},
        "$not": {
            "$elemMatch": {"_id": {"$in": ids}, "deny": True, "rights": {"$bitsAnySet": bits}}
        },
    }


def acl_expression(ids: list[str], rights: int, acl_path: str) -> dict[str, Any]:
    """The same test as :func:`acl_condition` as an aggregation expression over ``acl_path``.

    Used where only expressions apply (filtering the output array of ``$graphLookup``). Bits are
    tested arithmetically so that it runs on every MongoDB version.
    """
    bits = _bit_positions(rights)

    def has_bit(bit: int) -> dict[str, Any]:
        return {"$eq": [{"$mod": [{"$floor": {"$divide": ["$$ace.rights", 1 << bit]}}, 2]}, 1]}

    entry_is_ours = {"$in": ["$$ace._id", ids]}
    is_deny = {"$eq": ["$$ace.deny", True]}
    grants = {"$and": [entry_is_ours, {"$not": [is_deny]}, *(has_bit(b) for b in bits)]}
    denies = {"$and": [entry_is_ours, is_deny, {"$or": [has_bit(b) for b in bits]}]}
    acl = {"$ifNull": [acl_path, []]}
    return {
        "$and": [
            {"$anyElementTrue": [{"$map": {"input": acl, "as": "ace", "in": grants}}]},
            {"$not": [{"$anyElementTrue": [{"$map": {"input": acl, "as": "ace", "in": denies}}]}]},
        ]
    }


def has_right(principal: Principal, document: Mapping[str, Any], rights: int) -> bool:
    """The single-document form of :func:`access_filter`."""
    if principal.is_admin:
        return True
    acl = document.get("_acl")
    if not isinstance(acl, list):
        return False
    ids = set(principal.ids)
    granted = False
    for ace in acl:
        if not isinstance(ace, Mapping) or ace.get("_id") not in ids:
            continue
        mask = ace.get("rights")
        if not isinstance(mask, int):
            continue
        if ace.get("deny"):
            if mask & rights:
                return False
        elif mask & rights == rights:
            granted = True
    return granted


def fold(query: Mapping[str, Any], clause: Mapping[str, Any] | None) -> dict[str, Any]:
    """AND ``clause`` into ``query``: a plain extra key when it does not clash, else ``$and``."""
    if not clause:
        return dict(query)
    if not query:
        return dict(clause)
    if any(key in query for key in clause):
        return {"$and": [dict(query), dict(clause)]}
    return {**query, **clause}


def clean_acl(acl: Any) -> list[dict[str, Any]]:
    """Validate and normalise an ``_acl`` value from a client: entry shape, rights, duplicates."""
    if acl is None:
        return []
    if not isinstance(acl, list):
        raise ApiError("_acl must be a list of {_id, name, rights} entries")
    merged: dict[tuple[str, bool], dict[str, Any]] = {}
    for ace in acl:
        if not isinstance(ace, Mapping) or not isinstance(ace.get("_id"), str) or not ace["_id"]:
            raise ApiError("every _acl entry needs an _id (a user or role id)")
        deny = bool(ace.get("deny", False))
        rights = normalise_rights(ace.get("rights", READ))
        key = (ace["_id"], deny)
        if key in merged:
            merged[key]["rights"] |= rights
            continue
        entry: dict[str, Any] = {
            "_id": ace["_id"],
            "name": str(ace.get("name", "")),
            "rights": rights,
        }
        if deny:
            entry["deny"] = True
        merged[key] = entry
    if len(merged) > MAX_ACES:
        raise ApiError(f"_acl has {len(merged)} entries; at most {MAX_ACES} are allowed")
    return list(merged.values())


def ensure_ace(acl: list[dict[str, Any]], principal_id: str, name: str, rights: int) -> None:
    """Give ``principal_id`` at least ``rights`` in ``acl`` (in place)."""
    for ace in acl:
        if ace["_id"] == principal_id and not ace.get("deny"):
            ace["rights"] |= rights
            if name and not ace.get("name"):
                ace["name"] = name
            return
    acl.append({"_id": principal_id, "name": name, "rights": rights})


def mentions(value: Any, keys: Iterable[str]) -> bool:
    """True when any key in ``keys`` appears anywhere in a nested filter or pipeline."""
    wanted = set(keys)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if key in wanted:
                    return True
                stack.append(inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
